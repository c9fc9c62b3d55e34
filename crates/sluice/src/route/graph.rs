//! Graph facts about routes read straight from the TOML tables, so that the
//! config's graph checks run even for routes whose own settings failed: which
//! outputs a route offers, whether an `inputs` entry names one, and cycles.
//!
//! Outputs: `tenant`, `rate_limit`, `filter` offer `NAME`; `rules` offers
//! `NAME.PORT` for every `to`/`default` except `drop`; `bucket` offers `NAME`
//! (every event, with its bucket number) and `NAME.0` .. `NAME.{N-1}`.

use std::collections::{BTreeMap, HashMap, HashSet};

use toml_edit::{Item, Table};

use super::rules::DROP;
use crate::config::load::did_you_mean;

/// The outputs a route offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Only the route itself.
    Whole,
    /// Named ports, and not the whole (rules).
    Named(Vec<String>),
    /// The whole and numbered ports `0..n` (bucket).
    Numbered(u64),
    /// Unknown (the route's own settings are broken): accept anything.
    Any,
}

impl Ports {
    /// Read from a route's table.
    pub fn of(item: &Item) -> Ports {
        match item.get("type").and_then(Item::as_str) {
            Some("tenant" | "rate_limit" | "filter") => Ports::Whole,
            Some("rules") => {
                let mut names: Vec<String> = Vec::new();
                let rules = item.get("rules").and_then(Item::as_array);
                let tos = rules
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_inline_table()?.get("to")?.as_str());
                let default = item.get("default").and_then(Item::as_str);
                for to in tos.chain(default) {
                    if to != DROP && !names.iter().any(|n| n == to) {
                        names.push(to.to_owned());
                    }
                }
                if rules.is_none() && item.get("rules").is_some() {
                    return Ports::Any;
                }
                Ports::Named(names)
            }
            Some("bucket") => match item.get("buckets").and_then(Item::as_integer) {
                Some(n) if n > 0 => Ports::Numbered(n as u64),
                _ => Ports::Any,
            },
            _ => Ports::Any,
        }
    }

    fn accepts(&self, port: Option<&str>) -> bool {
        match (self, port) {
            (Ports::Any, _) => true,
            (Ports::Whole, None) => true,
            (Ports::Named(names), Some(p)) => names.iter().any(|n| n == p),
            (Ports::Numbered(_), None) => true,
            (Ports::Numbered(n), Some(p)) => {
                p.parse::<u64>().is_ok_and(|i| i < *n && p == i.to_string())
            }
            _ => false,
        }
    }

    fn names(&self, route: &str) -> Vec<String> {
        match self {
            Ports::Whole | Ports::Any => vec![route.to_owned()],
            Ports::Named(n) => n.iter().map(|p| format!("{route}.{p}")).collect(),
            Ports::Numbered(n) => {
                let mut v = vec![route.to_owned()];
                v.extend((0..(*n).min(64)).map(|i| format!("{route}.{i}")));
                v
            }
        }
    }
}

/// Every producer of the graph: sources and routes with their ports.
#[derive(Debug, Default)]
pub struct Producers {
    sources: HashSet<String>,
    routes: BTreeMap<String, Ports>,
}

impl Producers {
    /// Read `[sources]` and `[routes]`.
    pub fn from_root(root: &Table) -> Producers {
        let mut p = Producers::default();
        let family = |f: &str| root.get(f).and_then(Item::as_table_like);
        if let Some(t) = family("sources") {
            p.sources.extend(t.iter().map(|(n, _)| n.to_owned()));
        }
        if let Some(t) = family("routes") {
            for (name, item) in t.iter() {
                p.routes.insert(name.to_owned(), Ports::of(item));
            }
        }
        p
    }

    /// Why `input` names nothing, with a did-you-mean; `None` when it is valid.
    pub fn input_error(&self, input: &str) -> Option<String> {
        if self.sources.contains(input) {
            return None;
        }
        let (route, port) = match input.split_once('.') {
            Some((r, p)) => (r, Some(p)),
            None => (input, None),
        };
        if let Some(ports) = self.routes.get(route) {
            if ports.accepts(port) {
                return None;
            }
            let names = ports.names(route);
            return Some(match (ports, port) {
                (Ports::Named(_), None) => {
                    format!(
                        "route `{route}` has several outputs; name one of: {}",
                        names.join(", ")
                    )
                }
                _ => {
                    let mut msg = format!("route `{route}` has no output `{input}`");
                    match did_you_mean(input, names.iter().map(String::as_str)) {
                        Some(m) => msg.push_str(&format!(", did you mean `{m}`?")),
                        None => msg.push_str(&format!(" (outputs: {})", names.join(", "))),
                    }
                    msg
                }
            });
        }
        let all: Vec<String> = self
            .sources
            .iter()
            .cloned()
            .chain(self.routes.iter().flat_map(|(r, p)| p.names(r)))
            .collect();
        let what = if self.routes.is_empty() {
            "a source"
        } else {
            "a source or a route output"
        };
        let mut msg = format!("input `{input}` is not {what}");
        if let Some(m) = did_you_mean(input, all.iter().map(String::as_str)) {
            msg.push_str(&format!(", did you mean `{m}`?"));
        }
        Some(msg)
    }
}

/// Producers whose events nobody consumes, as (family, name, message): a
/// source no sink or route lists in `inputs`, a route output (`NAME`, a rules
/// port, or a bucket not covered by `NAME` or `NAME.i`) nobody lists. Such
/// events would be acknowledged to the client and thrown away, so `sluice
/// check` refuses them (see docs/routes.md, "Every output has a consumer").
pub fn unconsumed(root: &Table) -> Vec<(&'static str, String, String)> {
    let family = |f: &str| root.get(f).and_then(Item::as_table_like);
    let mut consumed: HashSet<String> = HashSet::new();
    for fam in ["routes", "sinks"] {
        let Some(t) = family(fam) else { continue };
        for (_, item) in t.iter() {
            let inputs = item.get("inputs").and_then(Item::as_array);
            consumed.extend(
                inputs
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.as_str())
                    .map(str::to_owned),
            );
        }
    }
    let mut found = Vec::new();
    if let Some(t) = family("sources") {
        for (name, _) in t.iter().filter(|(n, _)| !consumed.contains(*n)) {
            found.push((
                "sources",
                name.to_owned(),
                format!(
                    "source `{name}` feeds nothing: no sink or route lists it in `inputs`, so its \
                     events would be acknowledged and discarded; add it to a sink's `inputs` \
                     (a `null` sink to discard on purpose) or remove it"
                ),
            ));
        }
    }
    let Some(t) = family("routes") else {
        return found;
    };
    for (name, item) in t.iter() {
        let missing: Vec<String> = match Ports::of(item) {
            Ports::Any => Vec::new(),
            Ports::Whole | Ports::Numbered(_) if consumed.contains(name) => Vec::new(),
            Ports::Whole => vec![name.to_owned()],
            Ports::Named(ports) => ports
                .iter()
                .map(|p| format!("{name}.{p}"))
                .filter(|p| !consumed.contains(p))
                .collect(),
            Ports::Numbered(n) => {
                let missing: Vec<String> = (0..n)
                    .map(|i| format!("{name}.{i}"))
                    .filter(|p| !consumed.contains(p))
                    .collect();
                if missing.len() as u64 == n {
                    vec![name.to_owned()]
                } else {
                    missing
                }
            }
        };
        if missing.is_empty() {
            continue;
        }
        let mut shown: Vec<String> = missing.iter().take(8).map(|p| format!("`{p}`")).collect();
        if missing.len() > shown.len() {
            shown.push("…".to_owned());
        }
        found.push((
            "routes",
            name.to_owned(),
            format!(
                "route output{} {} feed{} nothing: no sink or route lists {} in `inputs`, so \
                 those events would be acknowledged and discarded; consume {} (a `null` sink to \
                 discard on purpose, or `to = \"drop\"` in rules)",
                if missing.len() > 1 { "s" } else { "" },
                shown.join(", "),
                if missing.len() > 1 { "" } else { "s" },
                if missing.len() > 1 { "them" } else { "it" },
                if missing.len() > 1 { "them" } else { "it" },
            ),
        ));
    }
    found
}

/// Cycles among routes, each as the route names along it (first = last).
pub fn cycles(root: &Table) -> Vec<Vec<String>> {
    let Some(routes) = root.get("routes").and_then(Item::as_table_like) else {
        return Vec::new();
    };
    // Edges producer route -> consuming route.
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    let names: Vec<&str> = routes.iter().map(|(n, _)| n).collect();
    for (name, item) in routes.iter() {
        let inputs = item.get("inputs").and_then(Item::as_array);
        for input in inputs.into_iter().flatten().filter_map(|i| i.as_str()) {
            let producer = input.split_once('.').map_or(input, |(r, _)| r);
            if let Some(p) = names.iter().find(|n| **n == producer) {
                consumers.entry(p).or_default().push(name);
            }
        }
    }
    // Depth-first search with colours; each back edge is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit<'a>(
        n: &'a str,
        consumers: &HashMap<&'a str, Vec<&'a str>>,
        colour: &mut HashMap<&'a str, Colour>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<Vec<String>>,
    ) {
        colour.insert(n, Colour::Grey);
        stack.push(n);
        for &c in consumers.get(n).into_iter().flatten() {
            match colour.get(c).copied().unwrap_or(Colour::White) {
                Colour::White => visit(c, consumers, colour, stack, found),
                Colour::Grey => {
                    let start = stack.iter().position(|s| *s == c).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| (*s).to_owned()).collect();
                    cycle.push(c.to_owned());
                    found.push(cycle);
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(n, Colour::Black);
    }
    let mut colour = HashMap::new();
    let mut found = Vec::new();
    for n in &names {
        if colour.get(n).copied().unwrap_or(Colour::White) == Colour::White {
            visit(n, &consumers, &mut colour, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> toml_edit::ImDocument<String> {
        toml_edit::ImDocument::parse(text.to_owned()).unwrap()
    }

    const GRAPH: &str = r#"
[sources.fw]
type = "stdin"
[routes.by_category]
type = "rules"
inputs = ["fw"]
rules = [{ match = "ignore*", to = "drop" }, { match = "app.**", to = "apps" }]
default = "rest"
[routes.bucketed]
type = "bucket"
inputs = ["by_category.apps"]
buckets = 5
"#;

    #[test]
    fn route_ports_are_valid_inputs() {
        let doc = root(GRAPH);
        let p = Producers::from_root(doc.as_table());
        for ok in [
            "fw",
            "by_category.apps",
            "by_category.rest",
            "bucketed",
            "bucketed.4",
        ] {
            assert_eq!(p.input_error(ok), None, "{ok}");
        }
        assert!(
            p.input_error("by_category")
                .unwrap()
                .contains("by_category.apps, by_category.rest")
        );
        assert!(p.input_error("by_category.drop").is_some());
        assert!(p.input_error("bucketed.5").is_some());
        assert!(p.input_error("bucketed.04").is_some());
        assert!(
            p.input_error("by_category.aps")
                .unwrap()
                .contains("did you mean `by_category.apps`")
        );
        assert!(
            p.input_error("nope")
                .unwrap()
                .contains("not a source or a route output")
        );
    }

    #[test]
    fn outputs_nobody_consumes_are_found() {
        // GRAPH: nothing reads `by_category.rest` nor `bucketed`.
        let found = unconsumed(root(GRAPH).as_table());
        let names: Vec<(&str, &str)> = found.iter().map(|(f, n, _)| (*f, n.as_str())).collect();
        assert_eq!(
            names,
            vec![("routes", "by_category"), ("routes", "bucketed")]
        );
        assert!(
            found[0].2.contains("`by_category.rest` feeds"),
            "{}",
            found[0].2
        );
        assert!(!found[0].2.contains("apps"), "{}", found[0].2);
        assert!(
            found[1].2.contains("output `bucketed` feeds"),
            "{}",
            found[1].2
        );

        let wired = format!(
            "{GRAPH}\n[sinks.a]\ntype = \"null\"\ninputs = [\"by_category.rest\", \"bucketed.0\", \"bucketed.1\"]\n[sources.lonely]\ntype = \"stdin\"\n"
        );
        let found = unconsumed(root(&wired).as_table());
        let names: Vec<(&str, &str)> = found.iter().map(|(f, n, _)| (*f, n.as_str())).collect();
        assert_eq!(names, vec![("sources", "lonely"), ("routes", "bucketed")]);
        // Buckets 2..4 are neither read alone nor through `bucketed`.
        assert!(
            found[1]
                .2
                .contains("`bucketed.2`, `bucketed.3`, `bucketed.4` feed nothing"),
            "{}",
            found[1].2
        );

        let whole = format!(
            "{GRAPH}\n[sinks.a]\ntype = \"null\"\ninputs = [\"by_category.rest\", \"bucketed\"]\n"
        );
        assert!(unconsumed(root(&whole).as_table()).is_empty());
    }

    #[test]
    fn cycles_are_found() {
        assert!(cycles(root(GRAPH).as_table()).is_empty());
        let text = format!(
            "{GRAPH}\n[routes.a]\ntype = \"filter\"\ninputs = [\"b\"]\n[routes.b]\ntype = \"filter\"\ninputs = [\"bucketed.1\", \"a\"]\n"
        );
        let found = cycles(root(&text).as_table());
        assert_eq!(
            found,
            vec![vec!["b".to_owned(), "a".to_owned(), "b".to_owned()]]
        );
    }
}
