//! What `sluice top` shows, computed from two scrapes of `/metrics`: the text
//! parsed (the subset of the exposition format the API writes: `name{labels}
//! value` lines, `#` lines skipped), each component's counters gathered, and
//! rates taken over the time between the scrapes.

use std::collections::BTreeMap;
use std::time::Instant;

/// One sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Parse exposition text; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let (key, after) = r.split_once("=\"")?;
            let (value, after) = unescape_until_quote(after)?;
            labels.push((key.to_owned(), value));
            r = after;
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_owned(), labels, value))
}

/// A label value up to its closing quote (`\\`, `\"`, `\n` escapes), and the rest.
fn unescape_until_quote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// A component's counters at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// `source`, `route` or `sink`.
    pub kind: String,
    /// `pipe`, `file`...
    pub type_name: String,
    pub received: f64,
    pub sent: f64,
    pub bytes: f64,
    pub errors: f64,
    pub discarded: f64,
    /// Buffer fill, 0..=1 (sinks), the fuller of events and bytes.
    pub fill: Option<f64>,
    /// Acknowledgement latency buckets: (upper bound, cumulative count).
    pub ack: Vec<(f64, f64)>,
}

/// Every component at one scrape, by (kind, name).
#[derive(Debug, Clone)]
pub struct Scrape {
    pub at: Instant,
    pub components: BTreeMap<(String, String), Counts>,
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

impl Scrape {
    /// Gather the component series of `samples`.
    pub fn new(at: Instant, samples: &[Sample]) -> Self {
        let mut components: BTreeMap<(String, String), Counts> = BTreeMap::new();
        // Buffer levels and capacities, by component: events, max events, bytes, max bytes.
        let mut buffers: BTreeMap<(String, String), [Option<f64>; 4]> = BTreeMap::new();
        for (name, labels, v) in samples {
            let id = label(labels, "component_id");
            if id.is_empty() {
                continue;
            }
            let key = (label(labels, "component_kind").to_owned(), id.to_owned());
            if let Some(slot) = match name.as_str() {
                "sluice_buffer_events" => Some(0),
                "sluice_buffer_max_events" => Some(1),
                "sluice_buffer_bytes" => Some(2),
                "sluice_buffer_max_bytes" => Some(3),
                _ => None,
            } {
                buffers.entry(key).or_default()[slot] = Some(*v);
                continue;
            }
            let c = components.entry(key).or_default();
            c.kind = label(labels, "component_kind").to_owned();
            c.type_name = label(labels, "component_type").to_owned();
            match name.as_str() {
                "sluice_component_received_events_total" => c.received += v,
                "sluice_component_sent_events_total" => c.sent += v,
                "sluice_component_received_bytes_total" => c.bytes += v,
                "sluice_component_errors_total" => c.errors += v,
                "sluice_component_discarded_events_total" => c.discarded += v,
                "sluice_source_ack_latency_seconds_bucket" => {
                    let le = match label(labels, "le") {
                        "+Inf" => f64::INFINITY,
                        s => s.parse().unwrap_or(f64::INFINITY),
                    };
                    c.ack.push((le, *v));
                }
                _ => {}
            }
        }
        for (key, [ev, max_ev, by, max_by]) in buffers {
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let fill = match (ratio(ev, max_ev), ratio(by, max_by)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(c) = components.get_mut(&key) {
                c.fill = fill;
            }
        }
        for c in components.values_mut() {
            c.ack.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Scrape { at, components }
    }
}

/// One row of the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub name: String,
    pub kind: String,
    pub type_name: String,
    pub in_rate: f64,
    pub out_rate: f64,
    pub bytes_rate: f64,
    pub errors: f64,
    pub discarded: f64,
    pub fill: Option<f64>,
    /// Upper bound of the bucket holding the 99th percentile, in seconds.
    pub ack_p99: Option<f64>,
}

/// Rows from the latest scrape and the one before (rates 0 without it).
pub fn rows(prev: Option<&Scrape>, now: &Scrape) -> Vec<Row> {
    now.components
        .iter()
        .map(|((_, name), c)| {
            let before =
                prev.and_then(|p| Some((p, p.components.get(&(c.kind.clone(), name.clone()))?)));
            let rate = |pick: fn(&Counts) -> f64| match before {
                Some((p, b)) => {
                    let dt = now.at.duration_since(p.at).as_secs_f64();
                    if dt > 0.0 {
                        (pick(c) - pick(b)).max(0.0) / dt
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            Row {
                name: name.clone(),
                kind: c.kind.clone(),
                type_name: c.type_name.clone(),
                in_rate: rate(|c| c.received),
                out_rate: rate(|c| c.sent),
                bytes_rate: rate(|c| c.bytes),
                errors: c.errors,
                discarded: c.discarded,
                fill: c.fill,
                ack_p99: p99(&c.ack, before.map(|(_, b)| b.ack.as_slice())),
            }
        })
        .collect()
}

/// The 99th percentile's bucket bound over the interval (the observations
/// since `before`), or over all time when the interval saw none.
fn p99(now: &[(f64, f64)], before: Option<&[(f64, f64)]>) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|&(le, n)| {
            let b = before
                .and_then(|b| b.iter().find(|x| x.0 == le))
                .map_or(0.0, |x| x.1);
            (le, n - b)
        })
        .collect();
    let pick = |buckets: &[(f64, f64)]| {
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        buckets
            .iter()
            .find(|(_, n)| *n >= 0.99 * total)
            .map(|(le, _)| *le)
    };
    pick(&delta).or_else(|| pick(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP sluice_component_received_events Events.
# TYPE sluice_component_received_events counter
sluice_component_received_events_total{component_id="p",component_kind="source",component_type="pipe"} 100
sluice_component_received_events_total{component_id="f",component_kind="sink",component_type="file"} 90
sluice_component_sent_events_total{component_id="f",component_kind="sink",component_type="file"} 80
sluice_component_discarded_events_total{component_id="f",component_kind="sink",component_type="file",reason="buffer_full"} 3
sluice_source_ack_latency_seconds_bucket{component_id="p",component_kind="source",component_type="pipe",le="0.001"} 10
sluice_source_ack_latency_seconds_bucket{component_id="p",component_kind="source",component_type="pipe",le="0.01"} 99
sluice_source_ack_latency_seconds_bucket{component_id="p",component_kind="source",component_type="pipe",le="+Inf"} 100
sluice_buffer_events{component_id="f",component_kind="sink",component_type="file",buffer_type="memory"} 25
sluice_buffer_max_events{component_id="f",component_kind="sink",component_type="file",buffer_type="memory"} 100
sluice_tenant_received_events_total{tenant="a \"q\" \\ b"} 5
# EOF
"#;

    #[test]
    fn parses_labels_with_escapes_and_gathers_components() {
        let samples = parse(TEXT);
        let t = samples
            .iter()
            .find(|s| s.0.starts_with("sluice_tenant"))
            .unwrap();
        assert_eq!(t.1, vec![("tenant".to_owned(), "a \"q\" \\ b".to_owned())]);
        let s = Scrape::new(Instant::now(), &samples);
        let f = &s.components[&("sink".to_owned(), "f".to_owned())];
        assert_eq!((f.received, f.sent, f.discarded), (90.0, 80.0, 3.0));
        assert_eq!(f.fill, Some(0.25));
        let p = &s.components[&("source".to_owned(), "p".to_owned())];
        assert_eq!(p.type_name, "pipe");
        assert_eq!(p99(&p.ack, None), Some(0.01));
    }

    #[test]
    fn rates_come_from_the_difference_of_two_scrapes() {
        let t0 = Instant::now();
        let a = Scrape::new(t0, &parse(TEXT));
        let more = TEXT.replace("\"pipe\"} 100\n", "\"pipe\"} 300\n");
        let b = Scrape::new(t0 + std::time::Duration::from_secs(2), &parse(&more));
        let rows = rows(Some(&a), &b);
        let p = rows.iter().find(|r| r.name == "p").unwrap();
        assert_eq!(p.in_rate, 100.0);
        let f = rows.iter().find(|r| r.name == "f").unwrap();
        assert_eq!(f.in_rate, 0.0);
    }
}
