//! What the file source's integration tests share: a file → file config,
//! starting sluice on it, appending to a watched file.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::{Daemon, wait_until};

/// A file source over `include` (with `extra` keys) into `$DIR/out.log`, raw.
pub(crate) fn config(include: &str, extra: &str) -> String {
    file_to_file(include, extra, r#"path = "$DIR/out.log""#)
}

/// The same into `$DIR/out.json`, one JSON object per event.
pub(crate) fn json_config(include: &str, extra: &str) -> String {
    file_to_file(
        include,
        extra,
        "path = \"$DIR/out.json\"\nencoding = \"json\"",
    )
}

fn file_to_file(include: &str, extra: &str, sink: &str) -> String {
    format!(
        r#"
        data_dir = "$DIR/data"
        [sources.f]
        type = "file"
        include = ["{include}"]
        {extra}
        [sinks.out]
        type = "file"
        inputs = ["f"]
        {sink}
        "#
    )
}

/// Start sluice and wait until its file source has made its first scan.
pub(crate) fn start(dir: &Path, config: &str) -> Daemon {
    let d = Daemon::start(dir, config);
    wait_until(Duration::from_secs(30), "sluice to start", || {
        d.stderr().contains("Sluice started.")
    });
    d
}

pub(crate) fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
