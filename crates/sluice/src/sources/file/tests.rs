//! Unit tests of one tailed file: offsets, acknowledgements, truncation.

use std::io::Write;
use std::sync::Arc;

use super::checkpoint::Fingerprint;
use super::tail::{SizeCheck, Tailed};
use crate::ack::AckStatus;
use crate::event::Origin;

fn open(path: &std::path::Path) -> Tailed {
    let f = std::fs::File::open(path).unwrap();
    let head = std::fs::read(path).unwrap();
    let fp = Fingerprint::of(&head[..head.len().min(16)]);
    Tailed::new(
        (0, 1),
        path.to_owned(),
        Arc::new(Origin::default()),
        f,
        0,
        fp,
        1024,
    )
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn texts(c: &super::tail::Chunk) -> Vec<String> {
    c.lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

#[test]
fn checkpoint_moves_only_over_acknowledged_batches_in_order() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"one\ntwo\n");
    let mut t = open(&p);
    assert_eq!(t.check_size().unwrap(), SizeCheck::Grew);
    let c1 = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c1), ["one", "two"]);
    append(&p, b"three\n");
    let c2 = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c2), ["three"]);
    // The second batch resolves first: the checkpoint must wait for the first.
    c2.ack.resolve(AckStatus::Delivered);
    assert!(!t.collect_acks());
    assert_eq!(t.committed, 0);
    c1.ack.resolve(AckStatus::Delivered);
    assert!(t.collect_acks());
    assert_eq!(t.committed, 14);
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn unterminated_line_is_held_and_not_committed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"whole\nhal");
    let mut t = open(&p);
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["whole"]);
    assert_eq!(t.emitted(), 6);
    c.ack.resolve(AckStatus::Delivered);
    t.collect_acks();
    assert_eq!(t.committed, 6);
    append(&p, b"f\n");
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["half"], "the line is joined, never split");
}

#[test]
fn released_file_emits_its_unterminated_tail() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"a\nlast");
    let mut t = open(&p);
    let _ = t.read_chunk().unwrap().unwrap();
    let c = t.finish().unwrap();
    assert_eq!(texts(&c), ["last"]);
}

#[test]
fn errored_batch_rewinds_to_the_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"one\n");
    let mut t = open(&p);
    let c1 = t.read_chunk().unwrap().unwrap();
    append(&p, b"two\n");
    let c2 = t.read_chunk().unwrap().unwrap();
    c1.ack.resolve(AckStatus::Delivered);
    c2.ack.resolve(AckStatus::Errored);
    t.collect_acks();
    assert_eq!(t.committed, 4);
    assert!(t.rewind_if_needed());
    let again = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&again), ["two"]);
}

#[test]
fn copy_dropped_unresolved_counts_as_errored_and_rewinds() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"one\n");
    let mut t = open(&p);
    drop(t.read_chunk().unwrap().unwrap());
    t.collect_acks();
    assert!(t.rewind_if_needed());
    assert_eq!(t.read_offset, 0);
}

#[test]
fn shrink_below_read_offset_is_a_truncation() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"0123456789\n0123456789\n");
    let mut t = open(&p);
    let _ = t.read_chunk().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&p, b"new\n");
    assert_eq!(t.check_size().unwrap(), SizeCheck::Truncated);
    assert_eq!(t.restart_from_zero(), 0);
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["new"]);
}

#[test]
fn a_line_cut_by_a_truncation_is_not_sent_as_a_fragment() {
    // copytruncate while a writer's line was half written: the reader holds
    // "w-12", the copy got "w-123\n". Sending "w-12" would duplicate line 12.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"w-11\nw-12\nw-12");
    let mut t = open(&p);
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["w-11", "w-12"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&p, b"w-124\n");
    assert_eq!(t.check_size().unwrap(), SizeCheck::Truncated);
    assert_eq!(t.restart_from_zero(), 4);
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["w-124"]);
    assert!(t.finish().is_none());
}

#[test]
fn truncated_and_refilled_past_the_offset_is_seen_by_its_first_bytes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"first-gen line\n");
    let mut t = open(&p);
    let _ = t.read_chunk().unwrap();
    std::fs::write(&p, b"second generation, longer than before\n").unwrap();
    assert_eq!(t.check_size().unwrap(), SizeCheck::Truncated);
}

#[test]
fn growth_with_same_head_is_growth() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"first-gen line\n");
    let mut t = open(&p);
    let _ = t.read_chunk().unwrap();
    append(&p, b"more\n");
    assert_eq!(t.check_size().unwrap(), SizeCheck::Grew);
}

#[test]
fn exact_line_starts_survive_crlf_and_are_dropped_after_a_cut_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    append(&p, b"ab\r\ncd\r\n\r\nef");
    let mut t = open(&p);
    t.exact_starts = true;
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(texts(&c), ["ab", "cd", ""]);
    assert_eq!(c.starts, [0, 4, 8]);
    assert_eq!(c.end, 10);
    // A line over the cap (1024): offsets are unknown, left out.
    append(&p, &[b'x'; 2000]);
    append(&p, b"\ngh\n");
    let c = t.read_chunk().unwrap().unwrap();
    assert_eq!(c.truncated, 1);
    assert!(c.starts.is_empty());
}
