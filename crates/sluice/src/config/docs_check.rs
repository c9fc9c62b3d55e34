//! Docs and config cannot drift: every key a component's config accepts appears on
//! that component's page under `docs/`, and no key table on those pages names a key
//! the code does not know. The keys come from the config structs themselves
//! ([`struct_fields`], what the loader's unknown-key check uses).
//!
//! A page documents a key in a table row whose first cell is the key in backticks
//! (`` | `path` | ``, `` | `buffer.max_events` | `` — the last segment counts) or in a
//! TOML example (`key = ...`, `{ key = ... }`, and `[a.b.key]` headers). A new
//! component adds its page and its structs to [`PAGES`]; a kind without a checked
//! page fails [`every_component_kind_has_its_page_checked`].

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::load::struct_fields;
use super::{BufferConfig, GlobalConfig, SINK_TYPES, SOURCE_TYPES, SinkCommon, SourceCommon};
use crate::route::{bucket, filter, rate_limit, rules, tenant, tenant_admin};
use crate::sinks::{archive, file, forward as forward_sink, kafka};
use crate::sources::{
    exec, file as file_source, forward, fuse, kafka as kafka_source, pipe, stdin, syslog,
};

type Fields = fn() -> &'static [&'static str];

/// Each reference page (or set of pages sharing one struct) and the config
/// structs whose keys it documents.
const PAGES: &[(&[&str], &[Fields])] = &[
    (&["configuration.md"], &[struct_fields::<GlobalConfig>]),
    (&["sources/README.md"], &[struct_fields::<SourceCommon>]),
    (
        &["sources/stdin.md"],
        &[struct_fields::<stdin::StdinSourceConfig>],
    ),
    (
        &["sources/exec.md"],
        &[struct_fields::<exec::ExecSourceConfig>],
    ),
    (
        &["sources/pipe.md"],
        &[struct_fields::<pipe::PipeSourceConfig>],
    ),
    (
        &["sources/file.md"],
        &[
            struct_fields::<file_source::FileSourceConfig>,
            struct_fields::<file_source::MultilineConfig>,
        ],
    ),
    (
        &["sources/syslog.md"],
        &[struct_fields::<syslog::SyslogSourceConfig>],
    ),
    (
        &["sources/kafka.md"],
        &[struct_fields::<kafka_source::KafkaSourceConfig>],
    ),
    (
        &["sources/fuse.md"],
        &[struct_fields::<fuse::FuseSourceConfig>],
    ),
    (
        &["sources/forward.md"],
        &[
            struct_fields::<forward::ForwardSourceConfig>,
            struct_fields::<forward::UserConfig>,
            struct_fields::<crate::tls::ServerTlsConfig>,
            struct_fields::<forward::ForwardLimits>,
        ],
    ),
    (
        &["routes.md"],
        &[
            struct_fields::<tenant::TenantRouteConfig>,
            struct_fields::<tenant_admin::TenantAdminConfig>,
            struct_fields::<rules::RulesRouteConfig>,
            struct_fields::<rules::Rule>,
            struct_fields::<bucket::BucketRouteConfig>,
            struct_fields::<rate_limit::RateLimitRouteConfig>,
            struct_fields::<filter::FilterRouteConfig>,
        ],
    ),
    (&["sinks/README.md"], &[struct_fields::<SinkCommon>]),
    (
        &["buffers/memory.md", "buffers/disk.md"],
        &[struct_fields::<BufferConfig>],
    ),
    (&["sinks/file.md"], &[struct_fields::<file::FileSinkConfig>]),
    (
        &["sinks/archive.md"],
        &[struct_fields::<archive::ArchiveSinkConfig>],
    ),
    (
        &["sinks/kafka.md"],
        &[
            struct_fields::<kafka::KafkaSinkConfig>,
            struct_fields::<kafka::CreateTopics>,
        ],
    ),
    (
        &["sinks/forward.md"],
        &[
            struct_fields::<forward_sink::ForwardSinkConfig>,
            struct_fields::<forward_sink::ClientTlsConfig>,
        ],
    ),
];

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Keys named in the first cell of a table row: `` | `a.b` | `` → `b`.
fn table_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .filter(|(_, after)| after.trim_start().starts_with('|'))
        .map(|(key, _)| key.rsplit('.').next().unwrap_or(key).to_owned())
        .filter(|k| is_key(k))
        .collect()
}

/// Keys assigned or opened in the page's TOML code blocks.
fn toml_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_toml = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_toml = line.trim() == "```toml";
            continue;
        }
        if !in_toml {
            continue;
        }
        let line = without_strings(line);
        let code = line.split('#').next().unwrap_or("");
        let t = code.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let h = h.trim_matches(|c| c == '[' || c == ']');
            keys.extend(
                h.rsplit('.')
                    .next()
                    .filter(|k| is_key(k))
                    .map(str::to_owned),
            );
            continue;
        }
        // `key = ...` at the start, and `{ key = ..., key = ... }` inline.
        for part in code.split(['{', ',']) {
            if let Some((k, _)) = part.split_once('=') {
                let k = k.trim();
                if is_key(k) {
                    keys.insert(k.to_owned());
                }
            }
        }
    }
    keys
}

/// `line` with the insides of its double-quoted strings removed.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in line.chars() {
        match (quoted, c) {
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => quoted = false,
            (true, _) => escaped = false,
            (false, '"') => quoted = true,
            (false, c) => out.push(c),
        }
    }
    out
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn every_config_key_is_documented_on_its_page_and_no_table_invents_one() {
    let mut problems = Vec::new();
    for (pages, structs) in PAGES {
        let mut text = String::new();
        for page in *pages {
            let path = docs_dir().join(page);
            text.push_str(
                &std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
        let code: BTreeSet<&str> = structs.iter().flat_map(|f| f().iter().copied()).collect();
        let tables = table_keys(&text);
        let documented: BTreeSet<String> = tables.union(&toml_keys(&text)).cloned().collect();
        let page = pages.join(" + ");
        for key in &code {
            if !documented.contains(*key) {
                problems.push(format!("docs/{page}: key `{key}` is not documented"));
            }
        }
        for key in &tables {
            if !code.contains(key.as_str()) {
                problems.push(format!(
                    "docs/{page}: the table documents `{key}`, which the config does not know"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_component_kind_has_its_page_checked() {
    let checked: BTreeSet<&str> = PAGES.iter().flat_map(|(p, _)| p.iter().copied()).collect();
    let mut missing = Vec::new();
    for (family, types) in [("sources", SOURCE_TYPES), ("sinks", SINK_TYPES)] {
        for ty in types {
            let page = format!("{family}/{ty}.md");
            if !docs_dir().join(&page).is_file() {
                missing.push(format!("docs/{page} does not exist"));
            }
            // Kinds without keys of their own (stdout, null) need a page, not a row here.
            let keyless = matches!(*ty, "stdout" | "null");
            if !keyless && !checked.contains(page.as_str()) {
                missing.push(format!("docs/{page} is not in PAGES"));
            }
        }
    }
    let routes = std::fs::read_to_string(docs_dir().join("routes.md")).expect("routes.md");
    for ty in crate::route::ROUTE_TYPES {
        if !routes.contains(&format!("type = \"{ty}\"")) {
            missing.push(format!("docs/routes.md does not show `type = \"{ty}\"`"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn key_extraction() {
    let page = "| key | default |\n|---|---|\n| `path` | x |\n| `buffer.max_events` | y |\n\
                | `not a key` | z |\n```toml\n[sources.fw.tls]\ncert_file = \"a = b\" # c = d\n\
                users = [{ username = \"a\", password = \"b\" }]\n```\nafter = 1\n";
    let t: Vec<String> = table_keys(page).into_iter().collect();
    assert_eq!(t, ["max_events", "path"]);
    let k: Vec<String> = toml_keys(page).into_iter().collect();
    assert_eq!(k, ["cert_file", "password", "tls", "username", "users"]);
}
