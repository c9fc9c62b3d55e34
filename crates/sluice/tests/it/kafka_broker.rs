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

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
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

// Retention is off: tests send events stamped years ago (fixed forward
// EventTimes), and Kafka deletes segments by record timestamp.

/// One KRaft node (controller + broker) of a cluster of `voters`.
pub struct Broker {
    kafka: Kafka,
    pub node_id: u32,
    pub port: u16,
    pub controller_port: u16,
    /// A plain listener advertised as itself, for the harness's admin client
    /// and inter-broker traffic, when clients are advertised a TLS terminator.
    internal_port: Option<u16>,
    pub dir: tempfile::TempDir,
    opts: Options,
    cluster_id: String,
    voters: String,
    cluster_size: usize,
    formatted: bool,
    child: Option<Child>,
}

/// A cluster id in Kafka's form (16 bytes, URL-safe base64 without padding).
fn cluster_id() -> String {
    use base64::Engine as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    bytes[12..].copy_from_slice(&(N.fetch_add(1, Ordering::Relaxed) as u32).to_le_bytes());
    // The first base64 digit comes from the top six bits of byte 0: keep it in
    // A..Z so the id never starts with '-', which the storage tool's argument
    // parser takes for an option (`--cluster-id: expected one argument`).
    bytes[0] &= 0x3f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Broker {
    /// A single-node broker on a free port, started.
    pub fn start(kafka: &Kafka) -> Broker {
        let mut b = Broker::new(kafka, free_port());
        b.start_process();
        b
    }

    /// A single-node broker for client port `port`, not started yet.
    pub fn new(kafka: &Kafka, port: u16) -> Broker {
        Broker::with_options(kafka, port, Options::default())
    }

    /// [`Broker::new`] set up as `opts` says.
    pub fn with_options(kafka: &Kafka, port: u16, opts: Options) -> Broker {
        let controller_port = free_port();
        let voters = format!("1@127.0.0.1:{controller_port}");
        Broker::node(
            kafka,
            1,
            port,
            controller_port,
            voters,
            1,
            cluster_id(),
            opts,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        kafka: &Kafka,
        node_id: u32,
        port: u16,
        controller_port: u16,
        voters: String,
        cluster_size: usize,
        cluster_id: String,
        opts: Options,
    ) -> Broker {
        Broker {
            kafka: kafka.clone(),
            node_id,
            port,
            controller_port,
            internal_port: opts.advertised_port.map(|_| free_port()),
            dir: tempfile::tempdir().expect("temp dir"),
            opts,
            cluster_id,
            voters,
            cluster_size,
            formatted: false,
            child: None,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn properties(&self) -> String {
        let d = self.dir.path();
        let rf = self.cluster_size.min(3);
        let min_isr = if rf >= 3 { 2 } else { 1 };
        let client = if self.opts.sasl_users.is_some() {
            "SASL_PLAINTEXT"
        } else {
            "PLAINTEXT"
        };
        let advertised = match self.opts.advertised_port {
            Some(p) => format!("{client}://localhost:{p}"),
            None => format!("{client}://127.0.0.1:{}", self.port),
        };
        let (listeners, advertised, inter) = match self.internal_port {
            Some(i) => (
                format!(
                    "{client}://127.0.0.1:{port},INTERNAL://127.0.0.1:{i}",
                    port = self.port
                ),
                format!("{advertised},INTERNAL://127.0.0.1:{i}"),
                "INTERNAL",
            ),
            None => (
                format!("{client}://127.0.0.1:{}", self.port),
                advertised,
                client,
            ),
        };
        let mut p = format!(
            "process.roles=broker,controller\n\
             node.id={id}\n\
             controller.listener.names=CONTROLLER\n\
             listeners={listeners},CONTROLLER://127.0.0.1:{cport}\n\
             advertised.listeners={advertised}\n\
             inter.broker.listener.name={inter}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             controller.quorum.voters={voters}\n\
             log.dirs={logs}\n\
             num.partitions=1\n\
             default.replication.factor={rf}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={rf}\n\
             offsets.topic.num.partitions=4\n\
             transaction.state.log.replication.factor={rf}\n\
             transaction.state.log.min.isr={min_isr}\n\
             transaction.state.log.num.partitions=4\n\
             share.coordinator.state.topic.replication.factor={rf}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n\
             log.flush.interval.messages=9223372036854775807\n\
             num.network.threads=2\n\
             num.io.threads=2\n\
             background.threads=2\n\
             log.cleaner.enable=false\n\
             log.retention.ms=-1\n\
             message.max.bytes=10485760\n",
            id = self.node_id,
            cport = self.controller_port,
            voters = self.voters,
            logs = d.join("data").display(),
        );
        if self.opts.sasl_users.is_some() {
            p.push_str(&format!(
                "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512\n\
                 sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
                 listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}\n\
                 listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={jaas}\n",
                jaas = format_args!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required \
                     username=\"{ADMIN_USER}\" password=\"{ADMIN_PASSWORD}\";"
                )
            ));
        }
        if self.opts.authorizer {
            // The controller listener is plain: its peers (the node itself) are
            // ANONYMOUS, and must be super users for the controller to accept them.
            p.push_str(&format!(
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 allow.everyone.if.no.acl.found=false\n\
                 super.users=User:{ADMIN_USER};User:ANONYMOUS\n"
            ));
        }
        for (k, v) in &self.opts.extra {
            p.push_str(&format!("{k}={v}\n"));
        }
        p
    }

    fn format(&mut self) {
        let props = self.dir.path().join("server.properties");
        std::fs::write(&props, self.properties()).expect("write server.properties");
        let mut cmd = self.kafka.java();
        cmd.args([
            "kafka.tools.StorageTool",
            "format",
            "-t",
            &self.cluster_id,
            "-c",
        ])
        .arg(&props)
        .arg("--ignore-formatted");
        if let Some(users) = &self.opts.sasl_users {
            cmd.args([
                "--add-scram",
                &format!("SCRAM-SHA-512=[name={ADMIN_USER},password={ADMIN_PASSWORD}]"),
                "--add-scram",
                &format!("SCRAM-SHA-256=[name={ADMIN_USER},password={ADMIN_PASSWORD}]"),
            ]);
            for (name, password, mech) in users {
                cmd.args([
                    "--add-scram",
                    &format!("{mech}=[name={name},password={password}]"),
                ]);
            }
        }
        let out = cmd.output().expect("run kafka.tools.StorageTool");
        assert!(
            out.status.success(),
            "formatting the broker's storage failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.formatted = true;
    }

    /// Start (or restart) the JVM, without waiting for it to be ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        if !self.formatted {
            self.format();
        }
        let d = self.dir.path();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("stdout.log"))
            .expect("broker stdout log");
        let log4j = crate::common::manifest_dir().join("../../scripts/kafka/log4j2.xml");
        let mut cmd = self.kafka.java();
        cmd.args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"])
            .arg(format!("-Dkafka.logs.dir={}", d.display()))
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("kafka.Kafka")
            .arg(d.join("server.properties"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start java (Apache Kafka)"));
    }

    /// Start (or restart) the JVM and wait until metadata lists every broker of
    /// its cluster.
    pub fn start_process(&mut self) {
        self.spawn();
        self.wait_ready(self.cluster_size);
    }

    /// Wait until a metadata request to this node lists `brokers` brokers.
    pub fn wait_ready(&mut self, brokers: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "the broker exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if self.brokers_seen() >= brokers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker {} not ready after 90 s:\n{}",
                self.node_id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many brokers a metadata request to this node lists (0 when it does not
    /// answer).
    fn brokers_seen(&self) -> usize {
        let c: BaseConsumer = match self.client_config().create() {
            Ok(c) => c,
            Err(_) => return 0,
        };
        c.fetch_metadata(None, Duration::from_secs(2))
            .map(|m| m.brokers().len())
            .unwrap_or(0)
    }

    /// librdkafka settings for an admin client of this node (as `admin` on SASL).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        let bootstrap = match self.internal_port {
            Some(i) => format!("127.0.0.1:{i}"),
            None => self.addr(),
        };
        c.set("bootstrap.servers", bootstrap)
            .set("log_level", "0")
            .set("socket.timeout.ms", "5000");
        if self.opts.sasl_users.is_some() {
            c.set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanisms", "SCRAM-SHA-512")
                .set("sasl.username", ADMIN_USER)
                .set("sasl.password", ADMIN_PASSWORD);
        }
        c
    }

    /// Create a topic (replication: the cluster's, up to 3).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        create_topics(
            self.client_config(),
            &[(name, partitions)],
            self.cluster_size.min(3) as i32,
        );
    }

    /// SIGSTOP: the broker stops answering (connections stay open, requests
    /// wait); `resume` continues it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Kill -9 and reap (a crash; the data stays in the log dirs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (a controlled shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
    }

    /// Whether the JVM runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// What the node logged (server.log, then the JVM's own output).
    pub fn log(&self) -> String {
        let d = self.dir.path();
        let server = std::fs::read_to_string(d.join("server.log")).unwrap_or_default();
        let tail: String = {
            let lines: Vec<&str> = server.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        let errors: Vec<&str> = server
            .lines()
            .filter(|l| l.contains("] ERROR ") || l.contains("] FATAL "))
            .take(10)
            .collect();
        let out = std::fs::read_to_string(d.join("stdout.log")).unwrap_or_default();
        format!(
            "--- broker {} first errors ---\n{}\n--- server.log (tail) ---\n{tail}\n--- stdout ---\n{out}",
            self.node_id,
            errors.join("\n")
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The JVM dies with the test binary, even if the binary is killed: the kernel
/// sends it SIGKILL when the thread that forked it exits.
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
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
