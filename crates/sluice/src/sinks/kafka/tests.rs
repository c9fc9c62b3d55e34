use std::path::Path;

use super::*;
use crate::config::{SinkKind, load_str};

fn load(sink: &str) -> Result<KafkaSinkConfig, String> {
    let text = format!(
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.k]\ntype = \"kafka\"\ninputs = [\"in\"]\n{sink}"
    );
    match load_str(Path::new("t.toml"), &text) {
        Ok(c) => match &c.sinks[0].kind {
            SinkKind::Kafka(k) => Ok(k.clone()),
            other => panic!("not a kafka sink: {other:?}"),
        },
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn minimal_config_has_safe_defaults() {
    let c = load("brokers = \"127.0.0.1:9092\"\ntopic = \"logs-{tag}\"").unwrap();
    assert_eq!(c.acks, Acks::All);
    assert_eq!(c.compression, KafkaCompression::None);
    assert_eq!(c.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(c.when_oversize, WhenOversize::Drop);
    let p = c.properties("k");
    assert_eq!(p.get("enable.idempotence"), Some("true"));
    assert_eq!(p.get("acks"), Some("all"));
    assert_eq!(p.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    assert_eq!(
        p.get("message.max.bytes"),
        None,
        "librdkafka's default fits the default limit"
    );
}

#[test]
fn full_config_parses_and_librdkafka_table_wins() {
    let c = load(
        r#"brokers = "a:9092,b:9092"
topic = "cdn-{tenant}"
key = "{field.host}"
encoding = "json"
compression = "zstd"
acks = "1"
max_message_bytes = 2000000
when_oversize = "truncate"
create_topics = { partitions = 3, replication_factor = 1 }
[sinks.k.librdkafka]
"compression.type" = "gzip"
"queue.buffering.max.ms" = 1000
"socket.keepalive.enable" = true
"#,
    )
    .unwrap();
    assert_eq!(c.acks, Acks::Leader);
    assert_eq!(
        c.create_topics,
        Some(CreateTopics {
            partitions: 3,
            replication_factor: 1
        })
    );
    let p = c.properties("k");
    assert_eq!(p.get("compression.codec"), Some("gzip"));
    assert_eq!(p.get("linger.ms"), Some("1000"));
    assert_eq!(p.get("socket.keepalive.enable"), Some("true"));
    assert_eq!(p.get("enable.idempotence"), Some("false"));
    assert_eq!(p.get("message.max.bytes"), Some("2000000"));
}

#[test]
fn bad_values_are_reported_at_their_keys() {
    let e = load("brokers = \"\"\ntopic = \"a b\"\nacks = \"2\"").unwrap_err();
    assert!(e.contains("sinks.k.acks"), "{e}");
    let e = load("brokers = \" ,x\"\ntopic = \"a b\"").unwrap_err();
    assert!(e.contains("sinks.k.brokers"), "{e}");
    assert!(e.contains("sinks.k.topic"), "{e}");
    let e = load("brokers = \"x\"\ntopic = \"logs-{nope}\"").unwrap_err();
    assert!(e.contains("unknown placeholder"), "{e}");
    let e = load("brokers = \"x\"\ntopic = \"t\"\nmax_message_bytes = 0").unwrap_err();
    assert!(e.contains("sinks.k.max_message_bytes"), "{e}");
    let e =
        load("brokers = \"x\"\ntopic = \"t\"\ncreate_topics = { partitions = 0, replicas = 1 }")
            .unwrap_err();
    assert!(e.contains("replicas"), "{e}");
    let e = load("brokers = \"x\"\ntopic = \"t\"\nproducers = 0").unwrap_err();
    assert!(e.contains("sinks.k.producers"), "{e}");
    let e = load("brokers = \"x\"\ntopic = \"t\"\npartition = \"p{bucket}\"").unwrap_err();
    assert!(e.contains("sinks.k.partition"), "{e}");
    assert!(
        load("brokers = \"x\"\ntopic = \"t\"\npartition = \"{bucket}\"\nproducers = 8").is_ok()
    );
}

#[test]
fn unknown_keys_and_librdkafka_properties_are_reported() {
    let e = load("brokers = \"x\"\ntopic = \"t\"\ncompresion = \"gzip\"").unwrap_err();
    assert!(e.contains("did you mean `compression`"), "{e}");
    let e = load("brokers = \"x\"\ntopic = \"t\"\n[sinks.k.librdkafka]\n\"linger.mss\" = 5")
        .unwrap_err();
    assert!(
        e.contains("sinks.k.librdkafka") && e.contains("linger.mss"),
        "{e}"
    );
}

#[test]
fn idempotence_needs_acks_all() {
    let e = load("brokers = \"x\"\ntopic = \"t\"\nacks = \"1\"\n[sinks.k.librdkafka]\n\"enable.idempotence\" = true")
        .unwrap_err();
    assert!(e.contains("idempotent"), "{e}");
    assert!(load("brokers = \"x\"\ntopic = \"t\"\nacks = 0").is_ok());
}

#[test]
fn tls_and_sasl_settings_are_accepted() {
    let c = load(
        r#"brokers = "x:9093"
topic = "t"
[sinks.k.librdkafka]
"security.protocol" = "sasl_ssl"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "u"
"sasl.password" = "p"
"ssl.ca.location" = "/etc/ssl/certs/ca-certificates.crt"
"#,
    );
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn topic_names_are_checked() {
    assert_eq!(topic_name_error("logs-app_1.x"), None);
    assert!(topic_name_error("").is_some());
    assert!(topic_name_error("..").is_some());
    assert!(topic_name_error("a/b").is_some());
    assert!(topic_name_error(&"x".repeat(MAX_TOPIC_LEN + 1)).is_some());
}

#[test]
fn exactly_once_defaults_and_properties() {
    let c = load(
        "brokers = \"b:9092\"\ntopic = \"t\"\nexactly_once = true\n[sinks.k.buffer]\ntype = \"disk\"",
    )
    .unwrap();
    assert!(c.exactly_once);
    assert_eq!(c.transaction_max_events, DEFAULT_TRANSACTION_MAX_EVENTS);
    assert_eq!(c.transaction_interval_ms, DEFAULT_TRANSACTION_INTERVAL_MS);
    assert_eq!(c.checkpoint_topic, DEFAULT_CHECKPOINT_TOPIC);
    let p = c.properties("k");
    assert_eq!(p.get("transaction.timeout.ms"), Some("60000"));
    assert_eq!(p.get("enable.idempotence"), Some("true"));
    let plain = load("brokers = \"b:9092\"\ntopic = \"t\"").unwrap();
    assert_eq!(plain.properties("k").get("transaction.timeout.ms"), None);
}

#[test]
fn exactly_once_is_refused_where_it_cannot_hold() {
    let cases = [
        ("exactly_once = true", "needs a disk buffer"),
        (
            "exactly_once = true\nproducers = 2\n[sinks.k.buffer]\ntype = \"disk\"",
            "leave producers at 1",
        ),
        (
            "exactly_once = true\nacks = \"1\"\n[sinks.k.buffer]\ntype = \"disk\"",
            "needs acks = \"all\"",
        ),
        (
            "exactly_once = true\n[sinks.k.buffer]\ntype = \"disk\"\n[sinks.k.librdkafka]\n\"transactional.id\" = \"x\"",
            "`transactional.id` is set by exactly_once",
        ),
        ("transaction_interval_ms = 0", "transaction_interval_ms"),
        ("transaction_max_events = 0", "transaction_max_events"),
        ("checkpoint_topic = \"a b\"", "checkpoint_topic"),
    ];
    for (extra, want) in cases {
        let err = load(&format!("brokers = \"b:9092\"\ntopic = \"t\"\n{extra}")).unwrap_err();
        assert!(err.contains(want), "{extra}: {err}");
    }
}
