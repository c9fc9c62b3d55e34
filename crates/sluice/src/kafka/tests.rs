use rdkafka::error::RDKafkaErrorCode;

use super::*;

#[test]
fn user_setting_replaces_default_and_its_alias() {
    let mut p = Properties::new();
    p.set("acks", "all");
    p.set("linger.ms", "5");
    p.set("request.required.acks", "1");
    p.set("queue.buffering.max.ms", "1000");
    assert_eq!(p.get("acks"), Some("1"));
    assert_eq!(p.get("linger.ms"), Some("1000"));
    assert_eq!(p.iter().count(), 2);
}

#[test]
fn unknown_property_is_reported() {
    assert!(check_property("queue.buffering.max.ms", "1000").is_ok());
    let e = check_property("queue.bufering.max.ms", "1").unwrap_err();
    assert!(e.contains("no such configuration property"), "{e}");
    assert!(check_property("linger.ms", "banana").is_err());
}

#[test]
fn failures_are_classified() {
    let f = |code| Failure { code }.class();
    assert_eq!(
        f(RDKafkaErrorCode::MessageSizeTooLarge),
        FailureClass::Permanent
    );
    assert_eq!(
        f(RDKafkaErrorCode::TopicAuthorizationFailed),
        FailureClass::Permanent
    );
    assert_eq!(f(RDKafkaErrorCode::UnknownTopic), FailureClass::Permanent);
    assert_eq!(
        f(RDKafkaErrorCode::MessageTimedOut),
        FailureClass::Retriable
    );
    assert_eq!(
        f(RDKafkaErrorCode::BrokerTransportFailure),
        FailureClass::Retriable
    );
    assert_eq!(f(RDKafkaErrorCode::PurgeQueue), FailureClass::Purged);
    assert!(
        Failure {
            code: RDKafkaErrorCode::QueueFull
        }
        .is_queue_full()
    );
}

#[test]
fn statistics_keep_queue_depth_cluster_brokers_and_known_lag() {
    let json = br#"{"name":"c#consumer-1","type":"consumer","msg_cnt":7,"msg_size":700,
      "brokers":{
        "localhost:9092/bootstrap":{"nodeid":-1,"rtt":{"avg":5,"p99":9,"cnt":3}},
        "localhost:9092/1":{"nodeid":1,"rtt":{"avg":1500,"p99":4000,"cnt":12}},
        "localhost:9093/2":{"nodeid":2,"rtt":{"avg":0,"p99":0,"cnt":0}}},
      "topics":{"logs":{"topic":"logs","partitions":{
        "0":{"partition":0,"consumer_lag":42},
        "1":{"partition":1,"consumer_lag":-1},
        "-1":{"partition":-1,"consumer_lag":-1}}}}}"#;
    let counters = std::sync::Arc::new(crate::metrics::Counters::default());
    let events = ClientEvents::with_stats("k".into(), Some(counters.clone()));
    events.statistics(json);
    let s = counters.kafka.get().expect("a snapshot");
    assert_eq!((s.queue_messages, s.queue_bytes), (7, 700));
    assert_eq!(s.brokers, vec![("localhost:9092/1".to_owned(), 1500, 4000)]);
    assert_eq!(s.consumer_lag, vec![("logs".to_owned(), 0, 42)]);
    events.statistics(b"not json");
    assert_eq!(
        counters.kafka.get(),
        Some(s.clone()),
        "a bad report keeps the last one"
    );
    // An interval without requests to broker 1 keeps its last figures.
    events.statistics(
        br#"{"name":"c#consumer-1","type":"consumer","brokers":{"localhost:9092/1":{"nodeid":1,"rtt":{"avg":0,"p99":0,"cnt":0}}}}"#,
    );
    assert_eq!(counters.kafka.get().unwrap().brokers, s.brokers);
    // A second client of the component (another producer): queues add up.
    events.statistics(br#"{"name":"p2","type":"producer","msg_cnt":3,"msg_size":30}"#);
    let both = counters.kafka.get().unwrap();
    assert_eq!((both.queue_messages, both.queue_bytes), (3, 30));
    assert_eq!(both.brokers, s.brokers);
}
