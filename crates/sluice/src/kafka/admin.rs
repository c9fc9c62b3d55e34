//! Admin operations: topic creation only.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{ClientEvents, Context, Properties, creation_error};

/// Why a topic could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateError {
    /// Whether trying again cannot help (invalid name, not authorized, policy).
    pub permanent: bool,
    /// What the broker or client said.
    pub reason: String,
}

/// Admin operations: topic creation only.
pub struct Admin {
    inner: AdminClient<Context<()>>,
}

impl Admin {
    /// Create the admin client (starts its thread; no network I/O yet).
    pub fn create(props: &Properties, events: Arc<ClientEvents>) -> Result<Self, String> {
        let cx = Context {
            events,
            _tracker: PhantomData,
        };
        let inner = AdminClient::from_config_and_context(&props.client_config(), cx)
            .map_err(|e| creation_error(&e))?;
        Ok(Admin { inner })
    }

    /// Create several topics in one request; returns those that exist now
    /// (created, or already there). Failures are left to [`Admin::create_topic`].
    pub async fn create_topics(
        &self,
        topics: &[String],
        partitions: i32,
        replication_factor: i32,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .create_topics(&new, &opts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(results
            .into_iter()
            .filter_map(|r| match r {
                Ok(t) | Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => Some(t),
                Err(_) => None,
            })
            .collect())
    }

    /// Create `topic` with one partition and `cleanup.policy = compact` (a
    /// replication factor of -1: the broker's default); an existing topic is
    /// success.
    pub async fn create_compacted_topic(
        &self,
        topic: &str,
        replication_factor: i32,
        timeout: Duration,
    ) -> Result<(), String> {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication_factor))
            .set("cleanup.policy", "compact")
            .set("segment.ms", "3600000")
            .set("min.cleanable.dirty.ratio", "0.1");
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .create_topics([&new], &opts)
            .await
            .map_err(|e| e.to_string())?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        Ok(())
    }

    /// Create `topic`; an already existing topic is success.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i32,
        timeout: Duration,
    ) -> Result<(), CreateError> {
        use RDKafkaErrorCode as C;
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(replication_factor),
        );
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .create_topics([&new], &opts)
            .await
            .map_err(|e| CreateError {
                permanent: false,
                reason: e.to_string(),
            })?;
        for r in results {
            if let Err((_, code)) = r {
                let permanent = matches!(
                    code,
                    C::InvalidTopic
                        | C::InvalidPartitions
                        | C::InvalidReplicationFactor
                        | C::InvalidReplicaAssignment
                        | C::InvalidConfig
                        | C::InvalidRequest
                        | C::PolicyViolation
                        | C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::UnsupportedVersion
                );
                if code != C::TopicAlreadyExists {
                    return Err(CreateError {
                        permanent,
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
