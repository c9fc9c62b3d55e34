//! `sluice tenant bundle`: a zip a tenant downloads to start consuming its logs.
//!
//! Layout (all under `ID/`): `README.md`, `kcat.sh`, `logstash.conf`,
//! `filebeat.yml`, `consumer.py` (confluent-kafka), and under `certs/` the CA and
//! the tenant's client certificate and key when `admin.ca_file` / `admin.certs_dir`
//! provide them. Consumer groups are named `ID-<tool>`, inside the `ID-` prefix
//! the tenant's ACLs allow.
//!
//! The zip is written with the `zip` crate (deflate, fixed dates, Unix modes).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::route::tenant_admin::TenantAdminConfig;

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Path inside the tenant's folder.
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Unix mode.
    pub mode: u32,
}

fn text(name: &str, data: String, mode: u32) -> BundleFile {
    BundleFile {
        name: name.to_owned(),
        data: data.into_bytes(),
        mode,
    }
}

/// Security settings carried into the configs.
struct Tls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    /// The tenant's SCRAM-SHA-512 password (user = the tenant id), when
    /// `admin.credentials_dir` holds one.
    scram: Option<String>,
}

impl Tls {
    fn ssl(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// librdkafka's `security.protocol` for these settings.
    fn protocol(&self) -> Option<&'static str> {
        match (self.ssl(), self.scram.is_some()) {
            (false, false) => None,
            (true, false) => Some("ssl"),
            (false, true) => Some("sasl_plaintext"),
            (true, true) => Some("sasl_ssl"),
        }
    }
}

/// Every file of a tenant's bundle.
pub fn files(
    id: &str,
    topic: &str,
    brokers: &str,
    admin: &TenantAdminConfig,
) -> anyhow::Result<Vec<BundleFile>> {
    let mut out = Vec::new();
    let mut tls = Tls {
        ca: None,
        cert: None,
        key: None,
        scram: super::grant::password_of(admin, id)?,
    };
    if let Some(ca) = &admin.ca_file {
        let data =
            std::fs::read(ca).with_context(|| format!("reading admin.ca_file {}", ca.display()))?;
        out.push(BundleFile {
            name: "certs/ca.pem".into(),
            data,
            mode: 0o644,
        });
        tls.ca = Some("certs/ca.pem".into());
    }
    if let Some(dir) = &admin.certs_dir {
        for (ext, slot, mode) in [("crt", &mut tls.cert, 0o644), ("key", &mut tls.key, 0o600)] {
            let p = dir.join(format!("{id}.{ext}"));
            match std::fs::read(&p) {
                Ok(data) => {
                    let name = format!("certs/{id}.{ext}");
                    out.push(BundleFile {
                        name: name.clone(),
                        data,
                        mode,
                    });
                    *slot = Some(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
            }
        }
    }
    out.push(text("README.md", readme(id, topic, brokers, &tls), 0o644));
    out.push(text("kcat.sh", kcat(id, topic, brokers, &tls), 0o755));
    out.push(text(
        "logstash.conf",
        logstash(id, topic, brokers, &tls),
        0o644,
    ));
    out.push(text(
        "filebeat.yml",
        filebeat(id, topic, brokers, &tls),
        0o644,
    ));
    out.push(text("consumer.py", python(id, topic, brokers, &tls), 0o755));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn readme(id: &str, topic: &str, brokers: &str, tls: &Tls) -> String {
    let certs = match (&tls.ca, &tls.cert) {
        (None, None) => "No certificates are configured for this bundle: the configs connect in plaintext. \
                         If your provider uses TLS, ask for the CA certificate and your client certificate \
                         and key, put them in `certs/` (`ca.pem`, `ID.crt`, `ID.key`) and add the TLS \
                         settings shown in each file's comments."
            .to_owned(),
        _ => "`certs/` holds the CA certificate and your client certificate and key; keep the key private \
              (mode 0600). The configs refer to them by relative path: run them from this folder."
            .to_owned(),
    };
    let auth = if tls.scram.is_some() {
        format!(
            "\n\n## Credentials\n\nYou authenticate with SASL/SCRAM-SHA-512 as user `{id}`; the password is \
             written into each config of this bundle: keep the bundle private."
        )
    } else {
        String::new()
    };
    format!(
        "# Logs for {id}\n\n\
         Your logs are published to Kafka topic `{topic}` on `{brokers}`.\n\
         You may read it with the principal `User:{id}`, in consumer groups whose names start with `{id}-`.\n\n\
         ## Ready-to-run consumers\n\n\
         - `kcat.sh` — prints the logs with kcat: `sh kcat.sh`\n\
         - `consumer.py` — Python (`pip install confluent-kafka`): `python3 consumer.py` \
         (`--max-messages N`, `--timeout SECS`, `--from-beginning`)\n\
         - `logstash.conf` — a Logstash kafka input: `logstash -f logstash.conf`\n\
         - `filebeat.yml` — a Filebeat kafka input: `filebeat -c filebeat.yml -e`\n\n\
         Each line is one log line as your servers wrote it, without your client id.\n\n\
         ## Certificates\n\n{certs}{auth}\n"
    )
}

fn kcat(id: &str, topic: &str, brokers: &str, tls: &Tls) -> String {
    let mut opts = String::new();
    if let Some(p) = tls.protocol() {
        opts.push_str(&format!(" -X security.protocol={p}"));
    }
    if let Some(pw) = &tls.scram {
        opts.push_str(&format!(
            " -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username={id} -X 'sasl.password={pw}'"
        ));
    }
    if let Some(ca) = &tls.ca {
        opts.push_str(&format!(" -X ssl.ca.location={ca}"));
    }
    if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
        opts.push_str(&format!(
            " -X ssl.certificate.location={c} -X ssl.key.location={k}"
        ));
    }
    let scram_note = if tls.scram.is_some() {
        "# SASL/SCRAM needs kcat on librdkafka newer than 2.0.2: Debian 12's kcat\n\
         # (librdkafka 2.0.2 with OpenSSL 3) is refused with \"invalid credentials\".\n"
    } else {
        ""
    };
    format!(
        "#!/bin/sh\n# Consume {topic} as {id} (kcat built on librdkafka >= 2.x).\n{scram_note}cd \"$(dirname \"$0\")\"\n\
         exec kcat -b '{brokers}' -G '{id}-kcat' -o beginning -q -u -f '%s\\n'{opts} '{topic}'\n"
    )
}

fn logstash(id: &str, topic: &str, brokers: &str, tls: &Tls) -> String {
    let mut sec = String::new();
    if let Some(pw) = &tls.scram {
        sec.push_str(&format!(
            "    sasl_mechanism => \"SCRAM-SHA-512\"\n    sasl_jaas_config => \"org.apache.kafka.common.security.scram.ScramLoginModule required username='{id}' password='{pw}';\"\n"
        ));
    }
    if let Some(p) = tls.protocol() {
        sec.push_str(&format!(
            "    security_protocol => \"{}\"\n",
            p.to_ascii_uppercase()
        ));
    }
    if tls.ssl() {
        if let Some(ca) = &tls.ca {
            sec.push_str(&format!(
                "    ssl_truststore_type => \"PEM\"\n    ssl_truststore_location => \"{ca}\"\n"
            ));
        }
        if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
            sec.push_str(&format!(
                "    ssl_keystore_type => \"PEM\"\n    ssl_keystore_location => \"{c}\"\n    ssl_key_password => \"\"  # key: {k}\n"
            ));
        }
    } else {
        sec.push_str("    # TLS: security_protocol => \"SSL\", ssl_truststore_location => \"certs/ca.pem\"\n");
    }
    format!(
        "# Logstash pipeline reading {id}'s logs.\ninput {{\n  kafka {{\n    bootstrap_servers => \"{brokers}\"\n    \
         topics => [\"{topic}\"]\n    group_id => \"{id}-logstash\"\n    client_id => \"{id}-logstash\"\n    \
         auto_offset_reset => \"earliest\"\n    codec => \"plain\"\n{sec}  }}\n}}\noutput {{\n  stdout {{ codec => line {{ format => \"%{{message}}\" }} }}\n}}\n"
    )
}

fn filebeat(id: &str, topic: &str, brokers: &str, tls: &Tls) -> String {
    let hosts: Vec<String> = brokers
        .split(',')
        .map(|b| format!("\"{}\"", b.trim()))
        .collect();
    let mut sec = String::new();
    if let Some(pw) = &tls.scram {
        sec.push_str(&format!(
            "    username: \"{id}\"\n    password: \"{pw}\"\n    sasl.mechanism: SCRAM-SHA-512\n"
        ));
    }
    if let Some(ca) = &tls.ca {
        sec.push_str(&format!("    ssl.certificate_authorities: [\"{ca}\"]\n"));
    }
    if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
        sec.push_str(&format!(
            "    ssl.certificate: \"{c}\"\n    ssl.key: \"{k}\"\n"
        ));
    }
    if !tls.ssl() {
        sec.push_str("    # TLS: ssl.certificate_authorities: [\"certs/ca.pem\"]\n");
    }
    format!(
        "# Filebeat reading {id}'s logs from Kafka.\nfilebeat.inputs:\n  - type: kafka\n    hosts: [{}]\n    \
         topics: [\"{topic}\"]\n    group_id: \"{id}-filebeat\"\n    client_id: \"{id}-filebeat\"\n    initial_offset: oldest\n{sec}\
         output.console:\n  codec.format:\n    string: '%{{[message]}}'\n",
        hosts.join(", ")
    )
}

fn python(id: &str, topic: &str, brokers: &str, tls: &Tls) -> String {
    let mut conf = format!(
        "    \"bootstrap.servers\": os.environ.get(\"KAFKA_BROKERS\", \"{brokers}\"),\n    \"group.id\": \"{id}-python\",\n    \
         \"client.id\": \"{id}-python\",\n    \"enable.auto.commit\": True,\n"
    );
    if let Some(p) = tls.protocol() {
        conf.push_str(&format!("    \"security.protocol\": \"{p}\",\n"));
    }
    if let Some(pw) = &tls.scram {
        conf.push_str(&format!(
            "    \"sasl.mechanisms\": \"SCRAM-SHA-512\",\n    \"sasl.username\": \"{id}\",\n    \"sasl.password\": \"{pw}\",\n"
        ));
    }
    if let Some(ca) = &tls.ca {
        conf.push_str(&format!(
            "    \"ssl.ca.location\": os.path.join(HERE, \"{ca}\"),\n"
        ));
    }
    if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
        conf.push_str(&format!(
            "    \"ssl.certificate.location\": os.path.join(HERE, \"{c}\"),\n    \"ssl.key.location\": os.path.join(HERE, \"{k}\"),\n"
        ));
    }
    format!(
        r#"#!/usr/bin/env python3
"""Print {id}'s logs from Kafka topic {topic}, one line each (pip install confluent-kafka)."""
import argparse
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "{topic}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-messages", type=int, default=0, help="stop after N messages (0: never)")
    ap.add_argument("--timeout", type=float, default=0, help="stop after SECS without a message (0: never)")
    ap.add_argument("--from-beginning", action="store_true", help="start at the oldest retained message")
    args = ap.parse_args()
    conf = {{
{conf}        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    }}
    c = Consumer(conf)
    c.subscribe([TOPIC])
    seen, idle_since = 0, time.monotonic()
    try:
        while not args.max_messages or seen < args.max_messages:
            msg = c.poll(0.5)
            if msg is None:
                if args.timeout and time.monotonic() - idle_since > args.timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"error: {{msg.error()}}", file=sys.stderr)
                continue
            idle_since = time.monotonic()
            sys.stdout.buffer.write(msg.value() + b"\n")
            sys.stdout.flush()
            seen += 1
    finally:
        c.close()


if __name__ == "__main__":
    main()
"#
    )
}

/// Write `files` into a zip under the folder `root/`, atomically (tmp + rename).
/// Entries are deflated, dated 1980-01-01 (the same inputs give the same bytes)
/// and carry their Unix modes.
pub fn write_zip(path: &Path, root: &str, files: &[BundleFile]) -> std::io::Result<()> {
    let tmp = path.with_extension("zip.tmp");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&tmp)?);
    for f in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(f.mode);
        zip.start_file(format!("{root}/{}", f.name), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(&f.data)?;
    }
    zip.finish().map_err(std::io::Error::other)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_zip_opens_with_python_zipfile() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("acme.crt"), "CERT").unwrap();
        std::fs::write(certs.join("acme.key"), "KEY").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        let admin = TenantAdminConfig {
            ca_file: Some(dir.path().join("ca.pem")),
            certs_dir: Some(certs),
            ..Default::default()
        };
        let files = files("acme", "logs-acme", "k1:9093,k2:9093", &admin).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "README.md",
                "certs/acme.crt",
                "certs/acme.key",
                "certs/ca.pem",
                "consumer.py",
                "filebeat.yml",
                "kcat.sh",
                "logstash.conf"
            ]
        );
        let py = String::from_utf8(
            files
                .iter()
                .find(|f| f.name == "consumer.py")
                .unwrap()
                .data
                .clone(),
        )
        .unwrap();
        assert!(py.contains("\"group.id\": \"acme-python\"") && py.contains("ssl.key.location"));
        let zip = dir.path().join("acme.zip");
        write_zip(&zip, "acme", &files).unwrap();
        let check = std::process::Command::new("python3")
            .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                          print(z.read('acme/certs/acme.key').decode(), oct(z.getinfo('acme/kcat.sh').external_attr >> 16))"])
            .arg(&zip)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&check.stdout).trim(),
            "KEY 0o100755"
        );
    }
}
