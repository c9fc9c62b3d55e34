//! `sluice validate --graph` and `--dot`: the graph a config builds, printed
//! without running it. The DOT form is laid out by a real Graphviz `dot`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::sluice_bin;

const CONFIG: &str = r#"
data_dir = "/tmp/sluice-graph-test"
[sources.web]
type = "stdin"
tag = "app.web"
[sources.noise]
type = "pipe"
path = "/tmp/sluice-graph-test/noise.pipe"
[routes.by_category]
type = "rules"
inputs = ["web", "noise"]
rules = [{ match = "app.**", to = "apps" }]
default = "rest"
[routes.loud]
type = "filter"
inputs = ["by_category.apps"]
min_level = "warn"
[sinks.apps]
type = "file"
inputs = ["by_category.apps", "loud"]
path = "/tmp/sluice-graph-test/apps.log"
buffer = { type = "disk", max_bytes = 104857600, fsync = "interval", fsync_interval_ms = 50 }
[sinks.rest]
type = "null"
inputs = ["by_category.rest", "web"]
"#;

fn validate(flag: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("graph.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    let out = Command::new(sluice_bin())
        .args(["validate", flag, "--config"])
        .arg(&path)
        .output()
        .expect("run sluice validate");
    assert!(
        out.status.success(),
        "validate {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn graph_shows_every_edge_port_and_buffer() {
    let text = validate("--graph");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_owned()
    };
    assert!(line("web").ends_with("→ by_category, rest"), "{text}");
    assert!(line("noise").ends_with("→ by_category"), "{text}");
    assert!(
        line("by_category").ends_with("→ .apps → loud, apps; .rest → rest"),
        "{text}"
    );
    assert!(line("loud").ends_with("→ apps"), "{text}");
    assert!(
        line("apps").contains("disk buffer 100 MiB, fsync interval 50 ms, block, acks disk"),
        "{text}"
    );
    assert!(
        line("rest").contains("memory buffer 100000 events, 256 MiB, block, acks end_to_end"),
        "{text}"
    );
}

#[test]
fn dot_output_is_laid_out_by_graphviz_with_every_edge() {
    let dot = validate("--dot");
    for edge in [
        r#""source:web" -> "route:by_category";"#,
        r#""source:web" -> "sink:rest";"#,
        r#""source:noise" -> "route:by_category";"#,
        r#""route:by_category" -> "route:loud" [label="apps"];"#,
        r#""route:by_category" -> "sink:apps" [label="apps"];"#,
        r#""route:by_category" -> "sink:rest" [label="rest"];"#,
        r#""route:loud" -> "sink:apps";"#,
    ] {
        assert!(dot.contains(edge), "missing {edge} in:\n{dot}");
    }
    // Graphviz reads it: plain output lists every node and edge it laid out.
    let mut child = Command::new("dot")
        .arg("-Tplain")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz `dot` (scripts/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("write dot");
    let out = child.wait_with_output().expect("dot");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = String::from_utf8_lossy(&out.stdout);
    assert_eq!(plain.lines().filter(|l| l.starts_with("node ")).count(), 6);
    assert_eq!(plain.lines().filter(|l| l.starts_with("edge ")).count(), 7);
}
