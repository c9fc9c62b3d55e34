//! What a delivery or enqueue error means for the records it hit.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What an error means for the records it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The broker or network may recover: send the record again after a backoff.
    Retriable,
    /// The record can never be accepted as it is (too large, not authorized,
    /// unknown topic, invalid): fail it.
    Permanent,
    /// Removed from the producer's queue at shutdown: not delivered, not retried.
    Purged,
}

/// One delivery or enqueue error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub(crate) code: RDKafkaErrorCode,
}

impl Failure {
    /// What to do about it.
    pub fn class(&self) -> FailureClass {
        use RDKafkaErrorCode as C;
        match self.code {
            C::PurgeQueue | C::PurgeInflight => FailureClass::Purged,
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidMessage
            | C::BadMessage
            | C::InvalidRecord
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidRequiredAcks
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::PolicyViolation
            | C::InvalidArgument
            | C::InvalidTimestamp
            | C::Fatal => FailureClass::Permanent,
            _ => FailureClass::Retriable,
        }
    }

    /// A permanent refusal about this record itself (size, contents, topic),
    /// not about the producer's rights or settings: the record is dropped and
    /// counted rather than failing its batch.
    pub fn is_record_specific(&self) -> bool {
        use RDKafkaErrorCode as C;
        self.class() == FailureClass::Permanent
            && !matches!(
                self.code,
                C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::TransactionalIdAuthorizationFailed
                    | C::InvalidRequiredAcks
                    | C::UnsupportedForMessageFormat
                    | C::UnsupportedCompressionType
                    | C::Fatal
            )
    }

    /// Whether the producer's local queue was full (hold the record, try later).
    pub fn is_queue_full(&self) -> bool {
        self.code == RDKafkaErrorCode::QueueFull
    }

    pub(crate) fn from_error(e: &KafkaError) -> Failure {
        Failure {
            code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({:?})", self.code)
    }
}
