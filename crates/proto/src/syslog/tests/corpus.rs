//! `testdata/syslog/corpus.jsonl`: real-world and RFC lines with the fields
//! expected of each (read with now = 2026-12-07T01:37:14Z, zone UTC). Every line is
//! also parsed with `\n`, `\r\n` and NUL appended and must give the same result.
//!
//! After a deliberate change of behaviour, `SYSLOG_CORPUS_BLESS=1 cargo test -p
//! sluice-proto corpus` rewrites the expectations; review the diff.

use serde_json::{Map, Value, json};

use super::opts;
use crate::syslog::{Format, Message, parse};

/// Read at run time: a test binary reused from a target dir built in another clone
/// must find this clone's file.
fn path() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../../testdata/syslog/corpus.jsonl")
}

fn text(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn render(r: Result<Message<'_>, crate::syslog::ParseError>) -> Value {
    let m = match r {
        Ok(m) => m,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let sd: Vec<Value> = m
        .structured_data
        .elements()
        .map(|e| {
            let params: Vec<Value> = e
                .params()
                .map(|p| json!([text(p.name), text(&p.value.unescaped())]))
                .collect();
            json!([text(e.id), params])
        })
        .collect();
    let opt = |v: Option<&[u8]>| v.map_or(Value::Null, text);
    json!({
        "format": if m.format == Format::Rfc5424 { "5424" } else { "3164" },
        "facility": m.priority.map(|p| p.facility),
        "severity": m.priority.map(|p| p.severity),
        "timestamp": m.timestamp,
        "hostname": opt(m.hostname),
        "appname": opt(m.appname),
        "procid": opt(m.procid),
        "msgid": opt(m.msgid),
        "sd": sd,
        "msg": text(m.msg),
    })
}

#[test]
fn corpus_lines_parse_to_their_expected_fields() {
    let data = std::fs::read_to_string(path()).expect("corpus file");
    let bless = std::env::var_os("SYSLOG_CORPUS_BLESS").is_some();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut count = 0;
    for (n, line) in data.lines().enumerate() {
        let mut entry: Map<String, Value> = serde_json::from_str(line).expect("corpus JSON");
        let input = entry["line"].as_str().expect("line is a string").to_owned();
        let got = render(parse(input.as_bytes(), &opts()));
        for suffix in ["\n", "\r\n", "\0"] {
            let with = format!("{input}{suffix}");
            let again = render(parse(with.as_bytes(), &opts()));
            if again != got && !input.ends_with(['\n', '\r', '\0']) {
                failures.push(format!("line {}: suffix {suffix:?} changed {again}", n + 1));
            }
        }
        if bless {
            entry.insert("expect".into(), got);
            out.push(serde_json::to_string(&entry).expect("serialises"));
        } else if entry["expect"] != got {
            failures.push(format!(
                "line {} ({}): expected {} got {got}",
                n + 1,
                entry["name"],
                entry["expect"]
            ));
        }
        count += 1;
    }
    if bless {
        std::fs::write(path(), out.join("\n") + "\n").expect("bless write");
    }
    assert!(count >= 50, "the corpus holds at least 50 lines");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
