//! A 3-node KRaft cluster whose nodes stop, die and come back one at a time.

use super::node::cluster_id;
use super::*;

/// A 3-node KRaft cluster (each node controller + broker), replication factor 3,
/// `min.insync.replicas = 2`.
pub struct Cluster {
    pub nodes: Vec<Broker>,
}

impl Cluster {
    /// Start `n` nodes and wait until each sees all of them.
    pub fn start(kafka: &Kafka, n: usize) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let id = cluster_id();
        let mut nodes: Vec<Broker> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, c))| {
                Broker::node(
                    kafka,
                    i as u32 + 1,
                    *p,
                    *c,
                    voters.clone(),
                    n,
                    id.clone(),
                    Options::default(),
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready(n);
        }
        Cluster { nodes }
    }

    /// `host:port,...` of every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Broker::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client config for the running nodes.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0");
        c
    }

    /// Create a topic replicated on every node.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        create_topics(
            self.client_config(),
            &[(name, partitions)],
            self.nodes.len().min(3) as i32,
        );
    }

    /// Node id leading `topic`'s partition `partition` (None while leaderless).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<u32> {
        let c: BaseConsumer = self.client_config().create().ok()?;
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0).then_some(p.leader() as u32)
    }

    /// In-sync replica count of a partition, as metadata reports it.
    pub fn isr(&self, topic: &str, partition: i32) -> usize {
        let Ok(c) = self.client_config().create::<BaseConsumer>() else {
            return 0;
        };
        let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            return 0;
        };
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map_or(0, |p| p.isr().len())
    }

    /// The node with this id.
    pub fn node(&mut self, id: u32) -> &mut Broker {
        self.nodes
            .iter_mut()
            .find(|n| n.node_id == id)
            .expect("node id")
    }

    /// Every node's log.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(Broker::log)
            .collect::<Vec<_>>()
            .join("\n")
    }
}
