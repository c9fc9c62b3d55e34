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
