//! One KRaft node (controller + broker): its storage formatted, its process
//! started, stopped, killed, paused, and its readiness.

use super::*;

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
pub(super) fn cluster_id() -> String {
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
    pub(super) fn node(
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
