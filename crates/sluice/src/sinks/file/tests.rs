//! The file sink's writer: durability of new files and rotations, names.

use std::sync::Arc;

use super::*;
use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch};
use bytes::Bytes;

fn writer(path: &Path, rotate_bytes: Option<u64>) -> Writer {
    let config = FileSinkConfig {
        path: path.to_string_lossy().into_owned(),
        rotate_bytes,
        rotate_secs: None,
        compression: Compression::None,
    };
    let template = Template::parse(&config.path, true, true).expect("template");
    Writer::new(config, template, Encoding::Raw, Arc::default())
}

fn tracked(body: &'static str) -> (EventBatch, crate::ack::AckReceiver) {
    let (token, rx) = AckToken::channel();
    let e = Event::new(
        Bytes::from_static(body.as_bytes()),
        0,
        "t".into(),
        "s".into(),
    );
    (EventBatch::new(vec![e], token), rx)
}

#[tokio::test]
async fn a_new_file_and_its_new_directories_are_fsynced_before_the_ack() {
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("a/b/out.log");
    let mut w = writer(&path, None);
    let (batch, ack) = tracked("one");
    w.commit(&mut vec![batch]);
    assert_eq!(ack.await, AckStatus::Delivered);
    // out.log's entry in b, b's in a, a's in the temp dir.
    assert_eq!(w.dir_syncs, 3);
    assert!(w.unsynced_dirs.is_empty());
    // Appending to a file whose entry is durable syncs no directory.
    let (batch, ack) = tracked("two");
    w.commit(&mut vec![batch]);
    assert_eq!(ack.await, AckStatus::Delivered);
    assert_eq!(w.dir_syncs, 3);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
}

#[tokio::test]
async fn a_rotation_fsyncs_the_directory_before_the_next_ack() {
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("out.log");
    let mut w = writer(&path, Some(4));
    // Five bytes: written to a new out.log, which then rotates to out.log.1.
    let (batch, ack) = tracked("aaaa");
    w.commit(&mut vec![batch]);
    assert_eq!(ack.await, AckStatus::Delivered);
    assert!(root.path().join("out.log.1").exists());
    assert!(!path.exists());
    // out.log's creation (synced when it closed), then the rename.
    assert_eq!(w.dir_syncs, 2);
    // The next batch starts a fresh out.log: its entry is synced too.
    let (batch, ack) = tracked("b");
    w.commit(&mut vec![batch]);
    assert_eq!(ack.await, AckStatus::Delivered);
    assert_eq!(w.dir_syncs, 3);
    assert!(w.unsynced_dirs.is_empty());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "b\n");
}

#[test]
fn rotated_names_keep_compression_extension_last() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log.gz");
    assert_eq!(
        next_rotated_name(&p, Compression::Gzip),
        dir.path().join("app.log.1.gz")
    );
    std::fs::write(dir.path().join("app.log.1.gz"), b"").unwrap();
    assert_eq!(
        next_rotated_name(&p, Compression::Gzip),
        dir.path().join("app.log.2.gz")
    );
    let p = dir.path().join("plain.log");
    assert_eq!(
        next_rotated_name(&p, Compression::None),
        dir.path().join("plain.log.1")
    );
}
