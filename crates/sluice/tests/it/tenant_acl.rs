//! `sluice tenant` against Apache Kafka with SASL/SCRAM and the standard
//! authorizer (`allow.everyone.if.no.acl.found = false`): `add` sets the tenant's
//! SCRAM credential and ACLs, the bundle's own consumers (Python confluent-kafka
//! and kcat) read the tenant's topic as `User:ID`, another tenant's topic is
//! refused with an authorization error, and `remove` revokes.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Daemon, sluice_bin};
use crate::kafka_broker::{ADMIN_PASSWORD, ADMIN_USER};
use crate::kafka_support::{Broker, Options, free_port, need_kafka};

pub fn tenant(dir: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("tenant")
        .args(args)
        .arg("--config")
        .arg(dir.join("sluice.toml"))
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `sluice tenant bundle ID` of the config in `dir`, unzipped (Python's
/// zipfile) into `dir/unpacked`; returns that directory.
pub fn unpack_bundle(dir: &Path, id: &str) -> std::path::PathBuf {
    let zip = dir.join(format!("{id}.zip"));
    let out = tenant(dir, &["bundle", id, "--out", zip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let unpack = dir.join("unpacked");
    let st = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        ])
        .arg(&zip)
        .arg(&unpack)
        .status()
        .unwrap();
    assert!(st.success());
    unpack
}

/// The lines the bundle's `consumer.py` prints for `n` records from the
/// beginning (giving up after `timeout_secs` without one), sorted by their
/// trailing number.
pub fn consumer_lines(unpack: &Path, id: &str, n: usize, timeout_secs: u32) -> Vec<String> {
    let out = Command::new("python3")
        .arg(unpack.join(id).join("consumer.py"))
        .args(["--from-beginning", "--max-messages", &n.to_string()])
        .args(["--timeout", &timeout_secs.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort_by_key(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u32>().ok()));
    got
}

/// An independent consumer (Python confluent-kafka) as `user` with SCRAM-SHA-512:
/// reads `topic` from the beginning in group `group` until `want` records or an
/// error. Prints each record, or `ERROR <code name>` and exits.
const READER: &str = r#"
import sys, time
from confluent_kafka import Consumer, KafkaError
brokers, user, password, topic, group, want = sys.argv[1:7]
c = Consumer({"bootstrap.servers": brokers, "security.protocol": "sasl_plaintext",
              "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
              "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "error_cb": lambda e: None})
c.subscribe([topic])
seen, deadline = 0, time.monotonic() + 60
while seen < int(want) and time.monotonic() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            continue
        print("ERROR", m.error().name())
        break
    print(m.value().decode())
    seen += 1
c.close()
"#;

fn read_as(broker: &Broker, user: &str, password: &str, topic: &str, group: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            READER,
            &broker.addr(),
            user,
            password,
            topic,
            group,
            "20",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort_by_key(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u32>().ok()));
    lines
}

/// The librdkafka the Python confluent-kafka wheel ships (2.16). Debian 12's
/// kcat links librdkafka 2.0.2, whose SCRAM fails against Apache Kafka with
/// OpenSSL 3 ("invalid credentials" for a right password); the same kcat on
/// this newer librdkafka authenticates.
fn newer_librdkafka() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import confluent_kafka, glob, os\n\
             d = os.path.join(os.path.dirname(confluent_kafka.__file__), '..', 'confluent_kafka.libs')\n\
             print(glob.glob(os.path.join(d, 'librdkafka*.so*'))[0])",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run a bundle's `kcat.sh` until it printed `n` lines (deadline 60 s), then
/// stop it; with `newer`, Debian's kcat runs on the wheel's librdkafka.
pub fn kcat_lines(script: &Path, n: usize, newer: bool) -> Vec<String> {
    let mut cmd = Command::new("sh");
    if newer {
        cmd.env("LD_PRELOAD", newer_librdkafka());
    }
    let mut child = cmd
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat.sh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        got.len(),
        n,
        "kcat.sh printed {got:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    got.sort_by_key(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u32>().ok()));
    got
}

#[test]
fn tenant_add_grants_scram_and_acls_bundle_reads_other_topics_refused_remove_revokes() {
    let kafka = need_kafka!();
    let mut broker = Broker::with_options(
        &kafka,
        free_port(),
        Options {
            sasl_users: Some(Vec::new()),
            authorizer: true,
            ..Options::default()
        },
    );
    broker.start_process();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tenants.txt"), "# tenants\n").unwrap();
    let program = "for n in range(20):\\n print(f'acme hello {n}')\\n print(f'zed other {n}')";
    let sasl = format!(
        "\"security.protocol\" = \"sasl_plaintext\"\n\
         \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"{ADMIN_USER}\"\n\
         \"sasl.password\" = \"{ADMIN_PASSWORD}\"\n"
    );
    let config = format!(
        r#"
data_dir = "$DIR/data"
[sources.edge]
type = "exec"
restart = "never"
command = ["python3", "-u", "-c", "{program}"]
[routes.by_tenant]
type = "tenant"
inputs = ["edge"]
strip = true
active_list = "$DIR/tenants.txt"
[routes.by_tenant.admin]
credentials_dir = "$DIR/credentials"
[routes.by_tenant.admin.options]
{sasl}
[sinks.k]
type = "kafka"
inputs = ["by_tenant"]
brokers = "{addr}"
topic = "logs-{{tenant}}"
[sinks.k.librdkafka]
{sasl}
"#,
        addr = broker.addr()
    )
    .replace("$DIR", d.to_str().unwrap());
    std::fs::write(d.join("sluice.toml"), &config).unwrap();

    for id in ["acme", "zed"] {
        let out = tenant(d, &["add", id]);
        let t = text(&out);
        assert!(out.status.success(), "{t}\n{}", broker.log());
        assert!(
            t.contains(&format!("credential SCRAM-SHA-512 set for User:{id}")),
            "{t}"
        );
        for b in [
            format!("READ on topic logs-{id} (literal)"),
            format!("DESCRIBE on topic logs-{id} (literal)"),
            format!("READ on group {id}- (prefixed)"),
        ] {
            assert!(
                t.contains(&format!("acl: granted ALLOW User:{id} {b}")),
                "{b}: {t}"
            );
        }
        assert!(t.contains(&format!("activated: {id}")), "{t}");
    }
    let password = std::fs::read_to_string(d.join("credentials/acme.password")).unwrap();
    let password = password.trim();
    assert!(password.len() >= 24, "a weak password: {password:?}");

    let mut daemon = Daemon::start(d, &config);
    assert!(
        daemon.wait(Duration::from_secs(60)).success(),
        "{}",
        daemon.stderr()
    );

    // The tenant reads its own topic as User:acme.
    let want: Vec<String> = (0..20).map(|n| format!("hello {n}")).collect();
    assert_eq!(
        read_as(&broker, "acme", password, "logs-acme", "acme-check"),
        want
    );
    // ... but not another tenant's: the broker refuses.
    let other = read_as(&broker, "acme", password, "logs-zed", "acme-snoop");
    assert_eq!(other, ["ERROR TOPIC_AUTHORIZATION_FAILED"], "{other:?}");
    // ... and not in a group outside its prefix.
    let group = read_as(&broker, "acme", password, "logs-acme", "zed-steal");
    assert_eq!(group, ["ERROR GROUP_AUTHORIZATION_FAILED"], "{group:?}");

    // The bundle's consumers, as shipped, read the tenant's events.
    let unpack = unpack_bundle(d, "acme");
    assert_eq!(consumer_lines(&unpack, "acme", 20, 30), want);
    assert_eq!(kcat_lines(&unpack.join("acme/kcat.sh"), 20, true), want);

    // remove revokes: the same credential is refused afterwards.
    let out = tenant(d, &["remove", "acme"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("acl: revoked ALLOW User:acme READ on topic logs-acme (literal)"),
        "{t}"
    );
    assert!(!t.contains("absent"), "every granted ACL is revoked: {t}");
    // (The group ACL goes with the topic's: the broker names whichever it checks first.)
    let after = read_as(&broker, "acme", password, "logs-acme", "acme-after");
    assert!(
        after == ["ERROR TOPIC_AUTHORIZATION_FAILED"]
            || after == ["ERROR GROUP_AUTHORIZATION_FAILED"],
        "{after:?}"
    );
}
