use std::sync::Arc;

use bytes::Bytes;

use super::journal::{Journal, encode_entry};
use super::*;

fn id(i: usize) -> Bytes {
    Bytes::from(format!("chunk-{i}"))
}

#[test]
fn window_forgets_the_oldest_past_max_chunks() {
    let mut w = Window::new(3, 3600);
    for i in 0..5 {
        w.insert(id(i), 100, 100);
        assert!(w.len() <= 3);
    }
    assert_eq!(w.len(), 3);
    assert!(!w.contains(&id(0), 100));
    assert!(!w.contains(&id(1), 100));
    for i in 2..5 {
        assert!(w.contains(&id(i), 100), "{i}");
    }
}

#[test]
fn window_forgets_ids_older_than_max_age() {
    let mut w = Window::new(100, 10);
    w.insert(id(0), 100, 100);
    w.insert(id(1), 105, 105);
    assert!(w.contains(&id(0), 109));
    assert!(!w.contains(&id(0), 110), "10 s after: forgotten");
    assert!(w.contains(&id(1), 110));
    assert_eq!(w.len(), 1);
    assert!(!w.contains(&id(1), 115));
    assert_eq!(w.len(), 0);
    // An id already too old when read back is not remembered.
    w.insert(id(2), 50, 115);
    assert_eq!(w.len(), 0);
}

#[test]
fn an_id_inserted_again_survives_its_older_entry() {
    let mut w = Window::new(3, 3600);
    w.insert(id(0), 1, 1);
    w.insert(id(1), 1, 1);
    w.insert(id(0), 2, 2);
    w.insert(id(2), 2, 2);
    // The stale first entry of 0 went out with the count; its newer one stays.
    assert_eq!(w.len(), 3);
    for i in 0..3 {
        assert!(w.contains(&id(i), 2), "{i}");
    }
    let live: Vec<_> = w.entries().map(|(i, _)| i.clone()).collect();
    assert_eq!(live, [id(1), id(0), id(2)]);
    // One more: 1 is now the oldest live entry.
    w.insert(id(3), 3, 3);
    assert!(!w.contains(&id(1), 3));
    assert_eq!(w.len(), 3);
}

fn dedupe(max_chunks: usize, dir: Option<&std::path::Path>) -> Arc<Dedupe> {
    let config = DedupeWindowConfig {
        max_chunks,
        max_age_secs: 3600,
    };
    Dedupe::open(
        &config,
        dir,
        HashMap::new(),
        "fw".into(),
        Arc::new(Counters::default()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_delivered_chunk_is_done_and_a_resend_in_flight_waits_for_it() {
    let d = dedupe(10, None);
    let Admit::New(token, first) = d.admit(&id(1), 1) else {
        panic!("first sight must be new");
    };
    let Admit::InFlight(second) = d.admit(&id(1), 1) else {
        panic!("in flight");
    };
    assert_eq!(d.remembered(), 0);
    token.resolve(AckStatus::Delivered);
    assert_eq!(first.await, AckStatus::Delivered);
    assert_eq!(second.await, AckStatus::Delivered);
    assert!(matches!(d.admit(&id(1), 1), Admit::Done));
    assert_eq!(d.remembered(), 1);
}

#[tokio::test]
async fn a_failed_chunk_is_forgotten_and_its_waiters_hear_the_failure() {
    let d = dedupe(10, None);
    let Admit::New(token, first) = d.admit(&id(1), 1) else {
        panic!("new");
    };
    let Admit::InFlight(second) = d.admit(&id(1), 1) else {
        panic!("in flight");
    };
    drop(token);
    assert_eq!(first.await, AckStatus::Errored);
    assert_eq!(second.await, AckStatus::Errored);
    assert!(matches!(d.admit(&id(1), 1), Admit::New(..)));
    assert_eq!(d.remembered(), 0);
}

#[tokio::test]
async fn the_journal_refills_the_window_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = dedupe(4, Some(dir.path()));
        for i in 0..10 {
            let Admit::New(token, rx) = d.admit(&id(i), 1) else {
                panic!("new");
            };
            token.resolve(AckStatus::Delivered);
            assert_eq!(rx.await, AckStatus::Delivered);
        }
        // Dropped without any stop: what was written is all there is.
    }
    let d = dedupe(4, Some(dir.path()));
    assert_eq!(d.remembered(), 4);
    for i in 6..10 {
        assert!(matches!(d.admit(&id(i), 1), Admit::Done), "{i}");
    }
    assert!(matches!(d.admit(&id(5), 1), Admit::New(..)));
    // On disk: at most two files of max_chunks entries each.
    let on_disk: u64 = ["chunks.old", "chunks.cur"]
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
        .sum();
    let entry = (1 + "chunk-0".len() + 12) as u64;
    assert!(on_disk <= 2 * (8 + 4 * entry), "{on_disk} bytes");
}

#[test]
fn a_torn_journal_tail_keeps_the_entries_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = b"SLCHUNK1".to_vec();
    encode_entry(b"a", 1000, &mut body);
    encode_entry(b"b", 1000, &mut body);
    let keep = body.len();
    encode_entry(b"c", 1000, &mut body);
    body.truncate(body.len() - 2);
    std::fs::write(dir.path().join("chunks.cur"), &body).unwrap();
    // A flipped byte in the old file ends it there.
    let mut old = b"SLCHUNK1".to_vec();
    encode_entry(b"x", 1000, &mut old);
    let flip = old.len();
    encode_entry(b"y", 1000, &mut old);
    old[flip + 1] ^= 0xff;
    std::fs::write(dir.path().join("chunks.old"), &old).unwrap();
    let mut w = Window::new(100, 3600);
    let mut j = Journal::open(dir.path(), &mut w, Vec::new(), 1001).unwrap();
    let ids: Vec<_> = w.entries().map(|(i, _)| i.clone()).collect();
    assert_eq!(ids, [&b"x"[..], b"a", b"b"]);
    assert!(keep < body.len());
    // Appends go to a fresh file: nothing after a torn tail.
    j.append(b"d", 1002).unwrap();
    let mut w = Window::new(100, 3600);
    Journal::open(dir.path(), &mut w, Vec::new(), 1003).unwrap();
    let ids: Vec<_> = w.entries().map(|(i, _)| i.clone()).collect();
    assert_eq!(ids, [&b"x"[..], b"a", b"b", b"d"]);
}

#[test]
fn a_foreign_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chunks.cur"), b"not a journal at all").unwrap();
    let mut w = Window::new(100, 3600);
    Journal::open(dir.path(), &mut w, Vec::new(), 1).unwrap();
    assert_eq!(w.len(), 0);
}
