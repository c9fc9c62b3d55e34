//! The format version is checked at open: a segment of another version (a
//! downgrade after a newer sluice wrote the buffer) fails the open with a clear
//! error and is left untouched, never repaired as a torn header.

use super::*;

#[test]
fn unknown_segment_version_fails_the_open_and_leaves_the_file_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..2);
    drop(wal);
    let seg = tmp.path().join(segment_name(0));
    let mut bytes = std::fs::read(&seg).expect("read segment");
    bytes[..8].copy_from_slice(b"SLWSEG02");
    std::fs::write(&seg, &bytes).expect("write segment");

    let err = match Wal::open(tmp.path(), small_opts(Fsync::Always)) {
        Ok(_) => panic!("a version 02 segment was opened"),
        Err(e) => e,
    };
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("format version 02 is unknown"),
        "unclear error: {text}"
    );
    assert_eq!(
        std::fs::read(&seg).expect("reread"),
        bytes,
        "the segment was modified"
    );
}
