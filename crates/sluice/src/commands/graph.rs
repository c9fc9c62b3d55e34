//! `sluice validate --graph` and `--dot`: the graph a valid config builds —
//! sources → routes (by port) → sinks, with each sink's buffer and when its
//! sources are acknowledged — as text for a terminal or as Graphviz DOT.
//!
//! Read from the validated [`Config`] alone: nothing is built or bound.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::buffer::Acknowledgements;
use crate::config::{BufferConfig, BufferKind, Config};

/// One consumer of a producer: `(port, family, consumer name)`.
type Edge<'c> = (Option<&'c str>, &'static str, &'c str);

/// Who reads from whom: for every producer (a source or route name), its
/// consumers in file order.
struct Edges<'c> {
    out: BTreeMap<&'c str, Vec<Edge<'c>>>,
}

impl<'c> Edges<'c> {
    fn of(config: &'c Config) -> Self {
        let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let mut out: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        let consumers = config
            .routes
            .iter()
            .map(|r| ("route", r.name.as_str(), &r.inputs))
            .chain(
                config
                    .sinks
                    .iter()
                    .map(|s| ("sink", s.name.as_str(), &s.inputs)),
            );
        for (family, name, inputs) in consumers {
            for input in inputs {
                // `route.port` names a route's port; anything else is a whole
                // component (names of sources may contain dots too).
                let (producer, port) = match input.split_once('.') {
                    Some((r, p)) if routes.contains(&r) => (r, Some(p)),
                    _ => (input.as_str(), None),
                };
                out.entry(producer).or_default().push((port, family, name));
            }
        }
        Edges { out }
    }

    fn of_producer(&self, name: &str) -> &[Edge<'c>] {
        self.out.get(name).map_or(&[], Vec::as_slice)
    }
}

fn acks(a: Acknowledgements) -> &'static str {
    match a {
        Acknowledgements::EndToEnd => "end_to_end",
        Acknowledgements::Disk => "disk",
        Acknowledgements::None => "none",
    }
}

fn buffer(b: &BufferConfig) -> String {
    match b.kind {
        BufferKind::Memory => format!(
            "memory buffer {} events, {} MiB, {}",
            b.max_events,
            b.max_bytes() >> 20,
            b.when_full.name()
        ),
        BufferKind::Disk => format!(
            "disk buffer {} MiB, fsync {}, {}",
            b.max_bytes() >> 20,
            match b.fsync {
                crate::buffer::FsyncPolicy::Always => "always".to_owned(),
                crate::buffer::FsyncPolicy::Interval =>
                    format!("interval {} ms", b.fsync_interval_ms),
            },
            b.when_full.name()
        ),
    }
}

/// Consumers of one producer as `a, b` or `.port → a; .other → b`.
fn targets(edges: &[Edge<'_>]) -> String {
    let mut whole: Vec<&str> = Vec::new();
    let mut ports: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (port, _, name) in edges {
        match port {
            None => whole.push(name),
            Some(p) => ports.entry(p).or_default().push(name),
        }
    }
    let mut parts = Vec::new();
    if !whole.is_empty() {
        parts.push(whole.join(", "));
    }
    for (p, names) in ports {
        parts.push(format!(".{p} → {}", names.join(", ")));
    }
    parts.join("; ")
}

/// The text form: one line per component, producers with their consumers.
pub fn text(config: &Config) -> String {
    let edges = Edges::of(config);
    let width = config
        .sources
        .iter()
        .map(|s| s.name.len())
        .chain(config.routes.iter().map(|r| r.name.len()))
        .chain(config.sinks.iter().map(|s| s.name.len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{}", config.path.display());
    if !config.sources.is_empty() {
        out.push_str("sources\n");
    }
    for s in &config.sources {
        let to = targets(edges.of_producer(&s.name));
        let _ = writeln!(out, "  {:width$}  {:8}  → {to}", s.name, s.kind.type_name());
    }
    if !config.routes.is_empty() {
        out.push_str("routes\n");
    }
    for r in &config.routes {
        let to = targets(edges.of_producer(&r.name));
        let _ = writeln!(out, "  {:width$}  {:8}  → {to}", r.name, r.kind.type_name());
    }
    if !config.sinks.is_empty() {
        out.push_str("sinks\n");
    }
    for s in &config.sinks {
        let _ = writeln!(
            out,
            "  {:width$}  {:8}  {}, acks {}",
            s.name,
            s.kind.type_name(),
            buffer(&s.buffer),
            acks(s.acknowledgements)
        );
    }
    out
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            '\n' => q.push_str("\\n"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The Graphviz form (`sluice validate --dot -c F | dot -Tsvg > graph.svg`).
pub fn dot(config: &Config) -> String {
    let edges = Edges::of(config);
    let id = |family: &str, name: &str| quote(&format!("{family}:{name}"));
    let mut out =
        String::from("digraph sluice {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    for s in &config.sources {
        let label = format!("{}\n{}", s.name, s.kind.type_name());
        let _ = writeln!(
            out,
            "  {} [shape=box, label={}];",
            id("source", &s.name),
            quote(&label)
        );
    }
    for r in &config.routes {
        let label = format!("{}\n{}", r.name, r.kind.type_name());
        let _ = writeln!(
            out,
            "  {} [shape=diamond, label={}];",
            id("route", &r.name),
            quote(&label)
        );
    }
    for s in &config.sinks {
        let label = format!(
            "{}\n{}\n{}\nacks {}",
            s.name,
            s.kind.type_name(),
            buffer(&s.buffer),
            acks(s.acknowledgements)
        );
        let _ = writeln!(
            out,
            "  {} [shape=box, style=rounded, label={}];",
            id("sink", &s.name),
            quote(&label)
        );
    }
    let producers = config
        .sources
        .iter()
        .map(|s| ("source", s.name.as_str()))
        .chain(config.routes.iter().map(|r| ("route", r.name.as_str())));
    for (family, name) in producers {
        for (port, to_family, to) in edges.of_producer(name) {
            let _ = write!(out, "  {} -> {}", id(family, name), id(to_family, to));
            match port {
                Some(p) => {
                    let _ = writeln!(out, " [label={}];", quote(p));
                }
                None => out.push_str(";\n"),
            }
        }
    }
    out.push_str("}\n");
    out
}
