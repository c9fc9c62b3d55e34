//! The configuration model: `[sources.NAME]`, `[routes.NAME]`, `[sinks.NAME]` and a
//! few global keys, loaded from TOML with every error reported at its file position.
//!
//! Each component table has a `type` selecting a closed set of kinds (no plugin
//! registry). Keys common to all kinds of a family (`tag` for sources; `inputs`,
//! `encoding`, `when_full`, `buffer`, `acknowledgements` for sinks) are read here;
//! the rest goes to the kind's own config struct, which lives beside its component.
//! Validation is pure: no I/O, no spawning.

pub mod load;
pub mod secret;
mod sinks;
mod sources;
pub mod watch;

pub use secret::Secret;
pub use sinks::{BufferConfig, BufferKind, NoOptions, SinkConfig, SinkKind};
use sinks::{SINK_TYPES, SinkCommon};
use sources::{SOURCE_TYPES, SourceCommon};
pub use sources::{SourceConfig, SourceKind};

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml_edit::{Item, Table};

pub use load::{ConfigError, ConfigErrors};
use load::{Diagnostics, check_keys, deserialize, did_you_mean, struct_fields};

use crate::route::{RouteConfig, RouteKind};

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File it was read from.
    pub path: PathBuf,
    /// Global keys.
    pub global: GlobalConfig,
    /// Sources in file order.
    pub sources: Vec<SourceConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// Sinks in file order.
    pub sinks: Vec<SinkConfig>,
}

/// Keys at the top level of the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GlobalConfig {
    /// Where disk buffers and checkpoints live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How long a graceful stop may take before the rest is abandoned (counted).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// `[api]`: metrics and health endpoints.
    #[serde(default)]
    pub api: crate::api::ApiConfig,
}

/// Top-level tables holding components, read apart from [`GlobalConfig`].
const FAMILIES: [&str; 3] = ["sources", "routes", "sinks"];

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/sluice")
}

fn default_shutdown_timeout_secs() -> u64 {
    10
}

/// Pure validation of one component: errors land on the component's keys.
pub struct Check<'d, 'a> {
    diag: &'d mut Diagnostics<'a>,
    table: &'d Table,
    path: String,
}

impl Check<'_, '_> {
    /// Report `message` against `key` of this component.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let span = self.span_of(key);
        self.diag
            .error(span, format!("{}.{key}", self.path), message);
    }

    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .get(key)
            .and_then(Item::span)
            .or_else(|| self.table.span())
    }
}

/// Pure validation implemented by each component config.
pub trait Validate {
    /// Report every problem through `v`.
    fn validate(&self, v: &mut Check<'_, '_>);
}

/// Read and fully validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            position: Some((1, 1)),
            key: "file".into(),
            message: format!("cannot read config: {}", crate::error_text(&e)),
        }])
    })?;
    load_str(path, &text)
}

/// Validate config text (`path` is used in messages).
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut diag = Diagnostics::new(path, text);
    let text = load::interpolate(text, &mut diag);
    let earlier = diag.errors;
    let mut diag = Diagnostics::new(path, &text);
    diag.errors = earlier;
    let Some(doc) = load::parse(&text, &mut diag) else {
        return Err(ConfigErrors(diag.finish()));
    };
    let root = doc.as_table();
    let mut known_root = struct_fields::<GlobalConfig>().to_vec();
    known_root.extend(FAMILIES);
    check_keys(root, &known_root, "config", &mut diag);
    if let Some(Item::Table(api)) = root.get("api") {
        check_keys(
            api,
            struct_fields::<crate::api::ApiConfig>(),
            "api",
            &mut diag,
        );
    }
    let global = deserialize::<GlobalConfig>(doc.as_item(), "config", Some(root), &mut diag);
    if let (Some(g), Some(Item::Table(api))) = (&global, root.get("api")) {
        g.api.validate(&mut Check {
            diag: &mut diag,
            table: api,
            path: "api".into(),
        });
    }

    let sources = read_family(root, "sources", &mut diag, |name, item, t, d| {
        let path = format!("sources.{name}");
        let ty = component_type(t, &path, SOURCE_TYPES, d)?;
        let mut known = struct_fields::<SourceCommon>().to_vec();
        known.retain(|k| *k != "_type");
        known.push("type");
        known.extend_from_slice(SourceKind::fields(ty));
        check_keys(t, &known, &path, d);
        let common: Option<SourceCommon> = deserialize(item, &path, Some(t), d);
        let kind = SourceKind::parse(ty, item, &path, t, d);
        let (common, kind) = (common?, kind?);
        kind.validate(&mut Check {
            diag: d,
            table: t,
            path: path.clone(),
        });
        Some(SourceConfig {
            name: name.to_owned(),
            tag: common.tag.unwrap_or_else(|| name.to_owned()),
            kind,
        })
    });
    let routes = read_family(root, "routes", &mut diag, |name, item, t, d| {
        let path = format!("routes.{name}");
        let ty = component_type(t, &path, crate::route::ROUTE_TYPES, d)?;
        let mut known = vec!["type", "inputs"];
        known.extend_from_slice(RouteKind::fields(ty));
        check_keys(t, &known, &path, d);
        let kind = RouteKind::parse(ty, item, &path, t, d);
        let mut check = Check {
            diag: d,
            table: t,
            path: path.clone(),
        };
        let inputs: Vec<String> = match t.get("inputs").map(|i| i.as_array()) {
            Some(Some(a)) if !a.is_empty() => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Some(_)) | None => {
                check.error("inputs", "a route needs at least one input");
                Vec::new()
            }
            Some(None) => {
                check.error("inputs", "expected an array of component names");
                Vec::new()
            }
        };
        let kind = kind?;
        kind.validate(&mut check);
        Some(RouteConfig {
            name: name.to_owned(),
            inputs,
            kind,
        })
    });
    let sinks = read_family(root, "sinks", &mut diag, |name, item, t, d| {
        let path = format!("sinks.{name}");
        let ty = component_type(t, &path, SINK_TYPES, d)?;
        let mut known: Vec<&str> = struct_fields::<SinkCommon>().to_vec();
        known.retain(|k| *k != "_type");
        known.push("type");
        known.extend_from_slice(SinkKind::fields(ty));
        check_keys(t, &known, &path, d);
        if let Some(Item::Table(b)) = t.get("buffer") {
            check_keys(
                b,
                struct_fields::<BufferConfig>(),
                &format!("{path}.buffer"),
                d,
            );
        }
        let common: Option<SinkCommon> = deserialize(item, &path, Some(t), d);
        let kind = SinkKind::parse(ty, item, &path, t, d);
        let (common, kind) = (common?, kind?);
        let mut check = Check {
            diag: d,
            table: t,
            path: path.clone(),
        };
        kind.validate(&mut check);
        let mut buffer = common.buffer.unwrap_or_default();
        if let Some(w) = common.when_full {
            if t.get("buffer").and_then(|b| b.get("when_full")).is_some() {
                check.error(
                    "when_full",
                    "set either when_full or buffer.when_full, not both",
                );
            }
            buffer.when_full = w;
        }
        if buffer.max_events == 0 {
            check.error("buffer", "buffer.max_events must be at least 1");
        }
        let acknowledgements = crate::buffer::validate_buffer(
            &buffer,
            common.acknowledgements,
            t.get("buffer"),
            &mut check,
        );
        if let SinkKind::Kafka(k) = &kind
            && k.exactly_once
            && buffer.kind != BufferKind::Disk
        {
            check.error(
                "exactly_once",
                "exactly_once needs a disk buffer ([sinks.NAME.buffer] type = \"disk\"): \
                 its positions are what each transaction commits",
            );
        }
        let inputs = match common.inputs {
            Some(i) if !i.is_empty() => i,
            _ => {
                check.error("inputs", "a sink needs at least one input");
                Vec::new()
            }
        };
        Some(SinkConfig {
            name: name.to_owned(),
            inputs,
            encoding: common.encoding,
            buffer,
            acknowledgements,
            kind,
        })
    });

    check_graph(root, &mut diag);
    check_conflicts(root, &sources, &sinks, &mut diag);

    let errors = diag.finish();
    match global {
        Some(global) if errors.is_empty() => {
            let mut sinks = sinks;
            if global.api.address.is_some()
                && let Some(i) = crate::route::accounting::keeping_sink(&routes, &sinks)
            {
                sinks[i].buffer.tenant_series = Some(global.api.max_tenant_series);
            }
            Ok(Config {
                path: path.to_owned(),
                global,
                sources,
                routes,
                sinks,
            })
        }
        _ => Err(ConfigErrors(errors)),
    }
}

/// Graph checks, read from the tables themselves so that they run even for
/// components whose own settings failed: names unique across families, every
/// input names a source, a route or a route's output port (`by_category.apps`,
/// see [`crate::route::graph`]), every source and route output is consumed
/// (else its events would be acknowledged into the void), and routes form no
/// cycle.
fn check_graph(root: &Table, diag: &mut Diagnostics<'_>) {
    let family = |f: &str| root.get(f).and_then(Item::as_table_like);
    let mut names: HashMap<String, &'static str> = HashMap::new();
    let producers = crate::route::graph::Producers::from_root(root);
    let mut bad_input = false;
    for (fam, kind) in [
        ("sources", "source"),
        ("routes", "route"),
        ("sinks", "sink"),
    ] {
        let Some(t) = family(fam) else { continue };
        for (name, item) in t.iter() {
            let path = format!("{fam}.{name}");
            if let Some(other) = names.get(name) {
                diag.error(
                    item.span(),
                    &path,
                    format!("name already used by a {other}; component names must be unique"),
                );
            } else {
                names.insert(name.to_owned(), kind);
            }
            if fam == "sources" {
                continue;
            }
            let Some(inputs) = item.get("inputs") else {
                continue;
            };
            let Some(array) = inputs.as_array() else {
                continue;
            };
            for input in array.iter() {
                let Some(input) = input.as_str() else {
                    continue;
                };
                if let Some(msg) = producers.input_error(input) {
                    diag.error(inputs.span(), format!("{path}.inputs"), msg);
                    bad_input = true;
                }
            }
        }
    }
    // A misspelled input also leaves its intended producer unconsumed: report
    // the input (with its did-you-mean) alone.
    let inputs_valid = !bad_input;
    for (fam, name, msg) in crate::route::graph::unconsumed(root)
        .into_iter()
        .filter(|_| inputs_valid)
    {
        let span = family(fam).and_then(|t| t.get(&name)).and_then(Item::span);
        diag.error(span, format!("{fam}.{name}"), msg);
    }
    for cycle in crate::route::graph::cycles(root) {
        let first = &cycle[0];
        let span = family("routes")
            .and_then(|t| t.get(first))
            .and_then(|r| r.get("inputs"))
            .and_then(Item::span);
        diag.error(
            span,
            format!("routes.{first}.inputs"),
            format!("routes form a cycle: {}", cycle.join(" -> ")),
        );
    }
}

fn component_type(
    t: &Table,
    path: &str,
    types: &'static [&'static str],
    d: &mut Diagnostics<'_>,
) -> Option<&'static str> {
    let Some(item) = t.get("type") else {
        d.error(
            t.span(),
            format!("{path}.type"),
            format!("missing key `type` (one of: {})", types.join(", ")),
        );
        return None;
    };
    let Some(ty) = item.as_str() else {
        d.error(item.span(), format!("{path}.type"), "expected a string");
        return None;
    };
    if let Some(known) = types.iter().find(|k| **k == ty) {
        return Some(known);
    }
    let mut msg = format!("unknown type `{ty}`");
    match did_you_mean(ty, types.iter().copied()) {
        Some(m) => msg.push_str(&format!(", did you mean `{m}`?")),
        None => msg.push_str(&format!(" (one of: {})", types.join(", "))),
    }
    d.error(item.span(), format!("{path}.type"), msg);
    None
}

fn read_family<T>(
    root: &Table,
    family: &str,
    diag: &mut Diagnostics<'_>,
    mut read: impl FnMut(&str, &Item, &Table, &mut Diagnostics<'_>) -> Option<T>,
) -> Vec<T> {
    let Some(item) = root.get(family) else {
        return Vec::new();
    };
    let Some(table) = item.as_table_like() else {
        diag.error(item.span(), family, "expected a table of named components");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, item) in table.iter() {
        let path = format!("{family}.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            diag.error(
                item.span(),
                &path,
                "component names use letters, digits, '_' and '-'",
            );
            continue;
        }
        let owned;
        let t = match item {
            Item::Table(t) => t,
            Item::Value(toml_edit::Value::InlineTable(it)) => {
                owned = it.clone().into_table();
                &owned
            }
            _ => {
                diag.error(item.span(), &path, "expected a table");
                continue;
            }
        };
        if let Some(v) = read(name, item, t, diag) {
            out.push(v);
        }
    }
    out
}

fn check_conflicts(
    root: &Table,
    sources: &[SourceConfig],
    sinks: &[SinkConfig],
    d: &mut Diagnostics<'_>,
) {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut stdin_seen = false;
    let mut claims: HashSet<String> = HashSet::new();
    for s in sources {
        let span = root
            .get("sources")
            .and_then(|t| t.get(&s.name))
            .and_then(Item::span);
        match &s.kind {
            SourceKind::Pipe(p) if !seen.insert(p.path.clone()) => d.error(
                span,
                format!("sources.{}.path", s.name),
                format!("another source already reads {}", p.path.display()),
            ),
            SourceKind::Forward(f)
                if !claims.insert(format!("tcp:{}", f.address))
                    | !claims.insert(format!("udp:{}", f.address)) =>
            {
                d.error(
                    span,
                    format!("sources.{}.address", s.name),
                    format!("another source already listens on {}", f.address),
                )
            }
            SourceKind::Syslog(c) if !claims.insert(c.resource()) => d.error(
                span,
                format!("sources.{}", s.name),
                format!("another source already uses {}", c.resource()),
            ),
            SourceKind::Stdin(_) if std::mem::replace(&mut stdin_seen, true) => d.error(
                span,
                format!("sources.{}", s.name),
                "only one stdin source may exist",
            ),
            _ => {}
        }
    }
    check_fuse_dirs(root, sources, d);
    let mut templates: HashSet<&str> = HashSet::new();
    for s in sinks {
        if let SinkKind::File(f) = &s.kind
            && !templates.insert(&f.path)
        {
            let span = root
                .get("sinks")
                .and_then(|t| t.get(&s.name))
                .and_then(Item::span);
            d.error(
                span,
                format!("sinks.{}.path", s.name),
                "another file sink writes the same path",
            );
        }
    }
}

/// Fuse sources: one directory captured once (mounts over the same or nested
/// directories would capture writes twice, or be refused at start).
fn check_fuse_dirs(root: &Table, sources: &[SourceConfig], d: &mut Diagnostics<'_>) {
    let mut seen: Vec<(&Path, &str)> = Vec::new();
    for s in sources {
        let SourceKind::Fuse(f) = &s.kind else {
            continue;
        };
        let span = root
            .get("sources")
            .and_then(|t| t.get(&s.name))
            .and_then(Item::span);
        for dir in &f.directories {
            let clash = seen
                .iter()
                .find(|(o, n)| *n != s.name && (dir.starts_with(o) || o.starts_with(dir)));
            if let Some((o, n)) = clash {
                let msg = format!(
                    "{} overlaps {} of fuse source `{n}`",
                    dir.display(),
                    o.display()
                );
                d.error(span.clone(), format!("sources.{}.directories", s.name), msg);
            }
            seen.push((dir, &s.name));
        }
    }
}

#[cfg(test)]
mod docs_check;
