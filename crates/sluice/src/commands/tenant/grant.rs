//! What `sluice tenant add/remove` grant on the brokers, outside the admin
//! client of `commands::tenant`: the ACL step run in a child process (`sluice tenant
//! acl-apply`, see [`super::acl`]) and its outcome, the ApiVersions probe
//! for brokers without ACL APIs, and the tenants' SCRAM passwords kept under
//! `admin.credentials_dir`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::acl as acl_ffi;
use crate::route::tenant_admin::TenantAdminConfig;

/// Exit code of the ACL child when the brokers refused.
pub const ACL_CHILD_REFUSED: i32 = 3;
/// Exit code of the ACL child when the brokers have no ACL support.
pub const ACL_CHILD_UNSUPPORTED: i32 = 4;

/// What became of the ACLs.
#[derive(Debug, PartialEq, Eq)]
pub enum AclOutcome {
    /// The brokers confirmed each binding.
    Applied(Vec<String>),
    /// Not applied, and why.
    NotApplied(String),
    /// The brokers have no ACLs at all (no ACL APIs, or no authorizer), and why.
    Unsupported(String),
}

/// The tenant's SCRAM password file in `dir` (`ID.password`, mode 0600),
/// created with a random password when absent.
pub fn ensure_password(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let path = dir.join(format!("{id}.password"));
    if path.exists() {
        return Ok(path);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut raw = [0u8; 24];
    acl_ffi::random_bytes(&mut raw).context("reading /dev/urandom")?;
    use base64::Engine as _;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let tmp = dir.join(format!(".{id}.password.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(password.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// The tenant's SCRAM password, when `admin.credentials_dir` holds one.
pub fn password_of(admin: &TenantAdminConfig, id: &str) -> anyhow::Result<Option<String>> {
    let Some(dir) = &admin.credentials_dir else {
        return Ok(None);
    };
    let p = dir.join(format!("{id}.password"));
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", p.display()))),
    }
}

/// The ACL bindings a tenant gets, as text.
pub fn acl_bindings(id: &str, topic: &str) -> Vec<String> {
    let p = format!("User:{id}");
    vec![
        format!("ALLOW {p} READ on topic {topic} (literal)"),
        format!("ALLOW {p} DESCRIBE on topic {topic} (literal)"),
        format!("ALLOW {p} READ on group {id}- (prefixed)"),
        format!("ALLOW {p} DESCRIBE on group {id}- (prefixed)"),
    ]
}

/// Run the `acl-apply` child for tenant `id` with `extra` arguments (`--revoke`,
/// `--scram-password-file F`).
pub fn acl_child(
    brokers: &str,
    options: &BTreeMap<String, String>,
    id: &str,
    topic: &str,
    extra: &[String],
) -> AclOutcome {
    let plaintext = options
        .get("security.protocol")
        .is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
    if plaintext {
        match acl_apis_advertised(brokers) {
            Ok(false) => {
                return AclOutcome::Unsupported(
                    "the brokers do not support Kafka ACLs (no DescribeAcls/CreateAcls in ApiVersions)".into(),
                );
            }
            Ok(true) => {}
            Err(e) => {
                return AclOutcome::NotApplied(format!(
                    "cannot ask the brokers which APIs they support: {e}"
                ));
            }
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return AclOutcome::NotApplied(format!(
                "cannot find the sluice binary to run the ACL step: {e}"
            ));
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "tenant",
        "acl-apply",
        id,
        "--brokers",
        brokers,
        "--topic",
        topic,
    ]);
    for (k, v) in options {
        cmd.arg("--option").arg(format!("{k}={v}"));
    }
    cmd.args(extra);
    let out = match cmd.stdin(std::process::Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => return AclOutcome::NotApplied(format!("cannot run the ACL step: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(0), _) => AclOutcome::Applied(stdout.lines().map(str::to_owned).collect()),
        (Some(ACL_CHILD_REFUSED), _) => AclOutcome::NotApplied(stdout),
        (Some(ACL_CHILD_UNSUPPORTED), _) => AclOutcome::Unsupported(stdout),
        (_, Some(sig)) => AclOutcome::NotApplied(format!(
            "the Kafka client aborted on the brokers' ACL reply (signal {sig}); the brokers do not implement ACLs properly"
        )),
        (code, _) => AclOutcome::NotApplied(format!(
            "the ACL step failed (exit {code:?}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Ask the first reachable broker for its API versions (ApiVersions v0, plaintext)
/// and say whether DescribeAcls (29) and CreateAcls (30) are among them.
pub fn acl_apis_advertised(brokers: &str) -> std::io::Result<bool> {
    let mut last = std::io::Error::other("no broker address given");
    for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match api_keys(b) {
            Ok(keys) => return Ok(keys.contains(&29) && keys.contains(&30)),
            Err(e) => last = std::io::Error::new(e.kind(), format!("{b}: {e}")),
        }
    }
    Err(last)
}

pub fn api_keys(broker: &str) -> std::io::Result<Vec<i16>> {
    let addr = broker
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("address does not resolve"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let client = b"sluice";
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&(10 + client.len() as i32).to_be_bytes());
    req.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    req.extend_from_slice(&0i16.to_be_bytes()); // v0
    req.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(client.len() as i16).to_be_bytes());
    req.extend_from_slice(client);
    s.write_all(&req)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(10..=1 << 20).contains(&len) {
        return Err(std::io::Error::other(format!(
            "bad ApiVersions reply size {len}"
        )));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    let error = i16::from_be_bytes([body[4], body[5]]);
    if error != 0 {
        return Err(std::io::Error::other(format!(
            "ApiVersions error code {error}"
        )));
    }
    let n = i32::from_be_bytes([body[6], body[7], body[8], body[9]]).max(0) as usize;
    let entries = body
        .get(10..10 + n * 6)
        .ok_or_else(|| std::io::Error::other("truncated ApiVersions reply"))?;
    Ok(entries
        .chunks_exact(6)
        .map(|e| i16::from_be_bytes([e[0], e[1]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_probe_reads_the_key_list() {
        // A fake broker answering ApiVersions v0 with keys 18 and 29 only.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 20];
            s.read_exact(&mut req[..20]).unwrap();
            let mut body = Vec::new();
            body.extend_from_slice(&1i32.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
            body.extend_from_slice(&2i32.to_be_bytes());
            for k in [18i16, 29] {
                body.extend_from_slice(&k.to_be_bytes());
                body.extend_from_slice(&[0, 0, 0, 3]);
            }
            let mut msg = (body.len() as i32).to_be_bytes().to_vec();
            msg.extend_from_slice(&body);
            s.write_all(&msg).unwrap();
        });
        assert_eq!(api_keys(&addr).unwrap(), vec![18, 29]);
        t.join().unwrap();
        assert!(acl_apis_advertised("127.0.0.1:1").is_err());
    }
}
