//! Any bytes as a disk buffer record payload (the layout inside a WAL record,
//! `crates/sluice/src/buffer/disk/codec`): decoding returns events or an error,
//! never panics, and allocates in proportion to the input. What decodes encodes
//! again and decodes to the same events (bodies, tags, sources, tenants,
//! buckets, times, origins, fields).
//!
//! The codec and the event types it needs are the daemon's own source files,
//! compiled here by path: building the whole daemon crate under the fuzzer
//! would rebuild librdkafka and TLS with sanitizers for one module.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../crates/sluice/src/ack.rs"]
mod ack;
#[allow(dead_code, unused_imports)]
#[path = "../../crates/sluice/src/latency.rs"]
mod latency;
#[allow(dead_code, unused_imports)]
#[path = "../../crates/sluice/src/event.rs"]
mod event;
#[allow(dead_code, unused_imports)]
#[path = "../../crates/sluice/src/buffer/disk/codec/mod.rs"]
mod codec;

/// `ack.rs` carries per-tenant counts for the routes (`route::accounting`),
/// which the codec never touches: an empty stand-in instead of the routing code.
mod route {
    pub mod accounting {
        #[derive(Debug, Default)]
        pub struct Ledger;

        impl Ledger {
            pub fn is_empty(&self) -> bool {
                true
            }
        }
    }
}

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    let _ = codec::event_count(&payload);
    let _ = codec::chunk_label(&payload);
    let Ok(events) = codec::decode(payload) else {
        return;
    };
    assert!(events.len() <= data.len(), "more events than bytes");
    let (mut records, mut oversize) = (Vec::new(), Vec::new());
    codec::encode(&events, None, 1 << 20, 64 << 20, &mut records, &mut oversize);
    assert!(oversize.is_empty(), "a decoded event is too large to store again");
    let again: Vec<event::Event> = records
        .into_iter()
        .flat_map(|r| codec::decode(Bytes::from(r)).expect("re-encoded record decodes"))
        .collect();
    assert_eq!(events, again);
});
