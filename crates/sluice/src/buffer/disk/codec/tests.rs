use super::*;
use crate::event::Value;

#[test]
fn raw_records_round_trip_as_slices_and_match_the_decoded_layout() {
    let pairs = vec![
        (Value::from("message"), Value::from("hi")),
        (
            Value::from("k8s"),
            Value::Map(vec![(Value::from("pod"), Value::from("web-1"))]),
        ),
    ];
    let mut decoded = Event::new(Bytes::from_static(b"hi"), 7, "t".into(), "s".into());
    decoded.fields = Some(Record::from(Arc::new(pairs.clone())));
    let mut raw = decoded.clone();
    raw.fields = Some(Record::Raw(RawMap::encode(&pairs)));
    // Both forms write the same bytes (so records written before raw maps existed
    // read back unchanged).
    let mut a = Vec::new();
    let mut b = Vec::new();
    encode(
        std::slice::from_ref(&decoded),
        None,
        1 << 20,
        1 << 20,
        &mut a,
        &mut Vec::new(),
    );
    encode(
        std::slice::from_ref(&raw),
        None,
        1 << 20,
        1 << 20,
        &mut b,
        &mut Vec::new(),
    );
    assert_eq!(a, b);
    let back = decode(Bytes::from(b.pop().unwrap())).unwrap();
    assert_eq!(back, vec![raw.clone()]);
    assert_eq!(back, vec![decoded]);
    let Some(Record::Raw(m)) = &back[0].fields else {
        panic!("{:?}", back[0].fields)
    };
    assert_eq!(
        m.get(b"message").and_then(|v| v.as_bytes()),
        Some(&b"hi"[..])
    );
}

fn full_event(i: u32) -> Event {
    let mut e = Event::new(
        Bytes::from(format!("body {i}")),
        1_700_000_000_000_000_000 + i64::from(i),
        "app.web".into(),
        "fwd".into(),
    );
    e.tenant = Some("acme".into());
    e.bucket = Some(i % 7);
    e.fields = Some(Record::from(Arc::new(vec![
        (Value::from("level"), Value::from("info")),
        (Value::from("n"), Value::from(i)),
        (
            Value::from("nested"),
            Value::Array(vec![Value::Nil, Value::Boolean(true), Value::F64(1.5)]),
        ),
    ])));
    e.origin = Some(Arc::new(Origin {
        path: Some("/var/log/app.log".into()),
        pid: Some(42),
        uid: Some(1000),
        gid: None,
        user: Some("app".into()),
        group: None,
        command: Some("app --serve".into()),
        host: Some("h1".into()),
        offset: Some(1 << 40),
        static_fields: Some(Arc::new(vec![("dc".into(), "eu".into())])),
        static_tags: Some(Arc::new(vec!["a".into(), "b".into()])),
    }));
    e
}

fn round_trip(events: &[Event], max: usize) -> Vec<Event> {
    let mut recs = Vec::new();
    let mut over = Vec::new();
    encode(events, None, max, max, &mut recs, &mut over);
    assert!(over.is_empty());
    recs.into_iter()
        .flat_map(|r| decode(Bytes::from(r)).expect("decodes"))
        .collect()
}

#[test]
fn every_event_field_round_trips() {
    let mut events: Vec<Event> = (0..5).map(full_event).collect();
    events.push(Event::new(
        Bytes::from_static(b"\xff\x00raw"),
        -5,
        "other".into(),
        "fwd".into(),
    ));
    let shared = events[0].origin.clone();
    events[2].origin = shared.clone();
    events[3].origin = shared;
    assert_eq!(round_trip(&events, 1 << 20), events);
}

#[test]
fn runs_share_one_record_after_decoding() {
    let f = Record::from(Arc::new(vec![(Value::from("k"), Value::from("v"))]));
    let events: Vec<Event> = (0..3)
        .map(|i| {
            let mut e = Event::new(Bytes::from(vec![b'x'; i]), 0, "t".into(), "s".into());
            e.fields = Some(f.clone());
            e
        })
        .collect();
    let back = round_trip(&events, 1 << 20);
    assert_eq!(back, events);
    assert!(
        back[0]
            .fields
            .as_ref()
            .unwrap()
            .same_as(back[2].fields.as_ref().unwrap())
    );
    assert!(Arc::ptr_eq(&back[0].tag, &back[2].tag));
}

#[test]
fn large_batch_splits_into_records_under_the_cap() {
    let events: Vec<Event> = (0..1000).map(full_event).collect();
    let mut recs = Vec::new();
    let mut over = Vec::new();
    encode(&events, None, 4096, 4096, &mut recs, &mut over);
    assert!(recs.len() > 10);
    assert!(recs.iter().all(|r| r.len() <= 4096));
    let n: u32 = recs.iter().map(|r| event_count(r).unwrap()).sum();
    assert_eq!(n, 1000);
    let back: Vec<Event> = recs
        .into_iter()
        .flat_map(|r| decode(Bytes::from(r)).unwrap())
        .collect();
    assert_eq!(back, events);
}

#[test]
fn an_event_larger_than_the_cap_is_reported_not_encoded() {
    let mut events: Vec<Event> = (0..3).map(full_event).collect();
    events.insert(
        1,
        Event::new(Bytes::from(vec![b'y'; 10_000]), 0, "t".into(), "s".into()),
    );
    let mut recs = Vec::new();
    let mut over = Vec::new();
    encode(&events, None, 2048, 2048, &mut recs, &mut over);
    assert_eq!(over, vec![1]);
    let back: Vec<Event> = recs
        .into_iter()
        .flat_map(|r| decode(Bytes::from(r)).unwrap())
        .collect();
    assert_eq!(
        back,
        vec![events[0].clone(), events[2].clone(), events[3].clone()]
    );
}

#[test]
fn an_event_over_the_packing_cap_gets_a_record_of_its_own_up_to_max_alone() {
    let big = Event::new(Bytes::from(vec![b'y'; 10_000]), 0, "t".into(), "s".into());
    let events = vec![full_event(0), big.clone(), full_event(1), full_event(2)];
    let mut recs = Vec::new();
    let mut over = Vec::new();
    encode(&events, None, 2048, 64 << 10, &mut recs, &mut over);
    assert!(over.is_empty(), "{over:?}");
    let counts: Vec<u32> = recs.iter().map(|r| event_count(r).unwrap()).collect();
    assert_eq!(counts, vec![1, 1, 2]);
    assert!(recs[0].len() <= 2048 && recs[2].len() <= 2048);
    let back: Vec<Event> = recs
        .into_iter()
        .flat_map(|r| decode(Bytes::from(r)).unwrap())
        .collect();
    assert_eq!(back, events);
    // Larger than `max_alone` too: left out.
    let mut over = Vec::new();
    encode(&[big], None, 2048, 8192, &mut Vec::new(), &mut over);
    assert_eq!(over, vec![0]);
}

#[test]
fn every_prefix_and_byte_flip_fails_cleanly() {
    let events: Vec<Event> = (0..4).map(full_event).collect();
    let mut recs = Vec::new();
    encode(&events, None, 1 << 20, 1 << 20, &mut recs, &mut Vec::new());
    let rec = recs.pop().unwrap();
    for cut in 0..rec.len() {
        assert!(
            decode(Bytes::copy_from_slice(&rec[..cut])).is_err(),
            "prefix {cut}"
        );
    }
    for i in 0..rec.len() {
        for bit in [0x01u8, 0x80, 0xff] {
            let mut bad = rec.clone();
            bad[i] ^= bit;
            let _ = decode(Bytes::from(bad)); // must not panic
        }
    }
    let mut huge = rec.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode(Bytes::from(huge)).is_err());
}

#[test]
fn a_labelled_batch_carries_its_chunk_in_every_record_and_decodes_the_same() {
    let events: Vec<Event> = (0..40).map(full_event).collect();
    let label = crate::ack::ChunkLabel {
        source: "fw".into(),
        id: Bytes::from_static(b"chunk-0123"),
        events: 40,
    };
    let (mut recs, mut over) = (Vec::new(), Vec::new());
    encode(&events, Some(&label), 2048, 2048, &mut recs, &mut over);
    assert!(over.is_empty());
    assert!(recs.len() > 1, "split into several records");
    let mut total = 0;
    let mut back = Vec::new();
    for r in &recs {
        assert!(r.len() <= 2048, "the trailer counts in the size");
        let l = chunk_label(r).expect("labelled");
        assert_eq!(
            (l.source, l.id, l.events),
            (&b"fw"[..], &b"chunk-0123"[..], 40)
        );
        total += event_count(r).unwrap();
        back.extend(decode(Bytes::from(r.clone())).unwrap());
    }
    assert_eq!(total, 40);
    assert_eq!(back, events);
    // Unlabelled records have none; cut or flipped trailers never panic.
    let mut plain = Vec::new();
    encode(&events[..1], None, 2048, 2048, &mut plain, &mut Vec::new());
    assert_eq!(chunk_label(&plain[0]), None);
    let rec = recs.pop().unwrap();
    for cut in 0..rec.len() {
        let _ = chunk_label(&rec[..cut]);
        assert!(
            decode(Bytes::copy_from_slice(&rec[..cut])).is_err(),
            "prefix {cut}"
        );
    }
}
