//! Apache Kafka brokers for the integration tests: a KRaft node (combined
//! controller + broker, `kafka.Kafka` on the Maven-installed classpath) on free
//! loopback ports, its storage formatted by `kafka.tools.StorageTool`, ready
//! when a metadata request lists every broker of its cluster; a 3-node cluster
//! (replication factor 3, `min.insync.replicas = 2`) whose nodes stop, die and
//! come back one at a time; and SASL/SCRAM with the standard authorizer for
//! tenant ACLs. Each node logs to `server.log` in its temp dir (printed by the
//! test's panic message through [`Broker::log`]).
//!
//! The install is found at `$SLUICE_KAFKA_HOME` (default `/var/tmp/sluice-kafka`,
//! made by `scripts/install-kafka.sh`). Missing, it fails the test with the
//! command that installs it; `SLUICE_SKIP_KAFKA_TESTS=1` skips the Kafka tests
//! instead, saying so (for laptops; never set in CI).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

mod cluster;
mod node;

pub use cluster::Cluster;
pub use node::Broker;

/// Where Apache Kafka's jars are.
#[derive(Debug, Clone)]
pub struct Kafka {
    libs: PathBuf,
}

/// The admin user of a SASL broker (a super user).
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// The install, or `None` when the Kafka tests are to be skipped. Panics with the
/// install command when it is missing.
pub fn kafka() -> Option<Kafka> {
    if std::env::var_os("SLUICE_SKIP_KAFKA_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: Kafka test skipped because SLUICE_SKIP_KAFKA_TESTS=1.");
        return None;
    }
    let home = std::env::var_os("SLUICE_KAFKA_HOME")
        .map_or_else(|| PathBuf::from("/var/tmp/sluice-kafka"), PathBuf::from);
    let libs = home.join("libs");
    assert!(
        libs.join(".installed").is_file(),
        "the Kafka tests need Apache Kafka in {}, which is not installed: run scripts/install-deps.sh \
         (or scripts/install-kafka.sh)",
        libs.display()
    );
    let python_ok = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python_ok,
        "the Kafka tests need Python confluent-kafka, which is not installed: run scripts/install-deps.sh"
    );
    Some(Kafka { libs })
}

impl Kafka {
    fn java(&self) -> Command {
        let mut cmd = Command::new("java");
        cmd.arg("-cp").arg(format!("{}/*", self.libs.display()));
        cmd
    }
}

/// A loopback port nobody listens on right now, for a broker to bind seconds
/// later (once its JVM is up). Taken below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768–60999 by default): a port from that range may
/// be handed to some client's outgoing connection meanwhile (a broker once
/// failed with "Unable to start acceptor" that way). No port is handed out twice
/// in one test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static STATE: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.max(12_000));
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = from + (x % u64::from(to - from)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// How a node is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Clients authenticate with SASL/SCRAM (SHA-256 and SHA-512); `admin` is a
    /// super user, and these `(name, password, mechanism)` exist from the start.
    pub sasl_users: Option<Vec<(String, String, String)>>,
    /// The standard authorizer, `allow.everyone.if.no.acl.found = false`.
    pub authorizer: bool,
    /// Advertise `localhost:PORT` (a TLS terminator in front) instead of the
    /// node's own listener.
    pub advertised_port: Option<u16>,
    /// Extra `server.properties` lines.
    pub extra: Vec<(String, String)>,
}

/// Create `(name, partitions)` topics in one request with replication `rf`;
/// a topic that exists already is fine.
pub fn create_topics(config: ClientConfig, topics: &[(&str, u32)], rf: i32) {
    // A thread of its own: callers may be inside a tokio runtime already.
    std::thread::scope(|s| {
        s.spawn(|| create_topics_blocking(config, topics, rf))
            .join()
            .expect("create topics")
    });
}

fn create_topics_blocking(config: ClientConfig, topics: &[(&str, u32)], rf: i32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = config.create().expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(n, p)| NewTopic::new(n, *p as i32, TopicReplication::Fixed(rf)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let res = admin
            .create_topics(&new, &opts)
            .await
            .expect("CreateTopics");
        for r in res {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => panic!("creating topic {t}: {e}"),
            }
        }
    });
}

/// The broker the tests of this binary share (unique topic names per test). It
/// is started by a thread of its own that lives as long as the binary, so the
/// JVM's parent-death signal fires only when the binary exits.
pub fn shared(kafka: &Kafka) -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let kafka = kafka.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-kafka".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(|| Broker::start(&kafka));
                match result {
                    Ok(b) => {
                        tx.send(Ok(b.addr())).expect("report broker");
                        // Keep the broker (and this thread) for the binary's lifetime.
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .unwrap_or_else(|| "broker start panicked".into());
                        let _ = tx.send(Err(msg));
                    }
                }
            })
            .expect("spawn broker thread");
        match rx.recv().expect("broker thread") {
            Ok(addr) => addr,
            Err(msg) => panic!("the shared broker did not start: {msg}"),
        }
    })
}
