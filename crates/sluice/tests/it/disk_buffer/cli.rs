//! `sluice buffer inspect` and `sluice buffer replay` on a real stranded buffer.

use super::{buffer_dir, run_cli, stranded_buffer};

#[test]
fn inspect_shows_a_real_buffer_and_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), 5000);
    let bdir = buffer_dir(dir.path());
    let b = bdir.to_str().unwrap();
    let (ok, out, err) = run_cli(&["buffer", "inspect", b]);
    assert!(ok, "{out}{err}");
    for want in [
        "segments:         1",
        "unacked records:",
        "oldest unacked:",
        "00000000000000000000.seg",
        "crc:              ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let unacked: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("unacked records:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    assert!(unacked > 0, "{out}");
    assert!(out.contains("s ago"), "{out}");

    let seg = bdir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    let (ok, out, _) = run_cli(&["buffer", "inspect", b]);
    assert!(!ok, "damage must fail the check:\n{out}");
    assert!(out.contains("DAMAGED at offset"), "{out}");
}

#[test]
fn replay_delivers_a_stranded_buffer_through_another_config() {
    const N: u64 = 8000;
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), N);
    let other = dir.path().join("other.toml");
    let target = dir.path().join("migrated.log");
    std::fs::write(
        &other,
        format!(
            "[sources.x]\ntype = \"stdin\"\n[sinks.m]\ntype = \"file\"\ninputs = [\"x\"]\npath = \"{}\"\n",
            target.display()
        ),
    )
    .unwrap();
    let b = buffer_dir(dir.path());
    let (ok, out, err) = run_cli(&[
        "buffer",
        "replay",
        b.to_str().unwrap(),
        "--to-config",
        other.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("records, ") && err.contains("events"),
        "progress on stderr:\n{err}"
    );
    assert!(err.contains("0 records left in the buffer"), "{err}");
    let text = std::fs::read_to_string(&target).unwrap();
    let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    // Replayed records are acknowledged: a second replay has nothing to do.
    let (ok, _, err) = run_cli(&[
        "buffer",
        "replay",
        b.to_str().unwrap(),
        "--to-config",
        other.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("Replayed 0 records"), "{err}");
}
