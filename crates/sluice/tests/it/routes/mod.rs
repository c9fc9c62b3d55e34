//! Routes end to end through the real daemon: exec sources → routes → file sinks
//! with `{tenant}` in the path. Tenant split and strip, unknown ids dropped or
//! passed (counted), the active list reloaded live while traffic flows, rules with
//! globs and a default, stable and spread buckets, rate limits (drop and block),
//! level filters, and the config errors of a bad graph.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, sluice_bin, wait_until};

mod broker;
mod rate_limit;
mod rules;
mod tenant;

/// The `key=N` value of a component's shutdown counter line, 0 when absent.
fn counter(stderr: &str, component: &str, key: &str) -> u64 {
    let tag = format!("Counters {component}: ");
    let line = stderr
        .lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no counters for {component}:\n{stderr}"));
    let rest = &line[line.find(&tag).unwrap() + tag.len()..];
    rest.trim_end_matches('.')
        .split_whitespace()
        .find_map(|kv| {
            kv.strip_prefix(&format!("{key}="))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or(0)
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An exec source running a Python program (stdout unbuffered), ending with it.
fn python_source(name: &str, program: &str) -> String {
    let program = program
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!(
        "[sources.{name}]\ntype = \"exec\"\nrestart = \"never\"\ncommand = [\"python3\", \"-u\", \"-c\", \"{program}\"]\n"
    )
}

fn run_to_end(dir: &Path, config: &str) -> String {
    let mut d = Daemon::start(dir, config);
    let st = d.wait(Duration::from_secs(60));
    let stderr = d.stderr();
    assert!(st.success(), "{stderr}");
    stderr
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
