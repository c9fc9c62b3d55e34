//! `sluice tenant`: onboarding tenants of a `tenant` route on the brokers.
//!
//! - `add ID`: create the topic (`admin.topic`, default `logs-{tenant}`), grant
//!   `User:ID` READ and DESCRIBE on it and on consumer groups `ID-*` where the
//!   brokers support ACLs, then append ID to the active list (tmp + rename under
//!   a lock file), which running agents pick up within a second.
//!   With `admin.credentials_dir`, `add` also sets a SCRAM-SHA-512 credential
//!   for `User:ID` (its password kept in that directory, carried into bundles).
//! - `remove ID`: take ID off the active list and delete the ACLs `add` granted
//!   (where the brokers support ACLs); the topic, its data and the credential stay.
//! - `list`: ids from the list and topics on the brokers, partitions, active.
//! - `bundle ID --out ID.zip`: ready consumer configs (see [`super::bundle`]).
//!
//! ACLs are never claimed without the broker's word. A broker that does not
//! advertise DescribeAcls/CreateAcls in its ApiVersions is reported as lacking
//! them. Otherwise the ACL calls run in a child process (`sluice tenant
//! acl-apply`): some brokers answer CreateAcls in a way that makes librdkafka
//! abort the process, and that must not take this command down with it. When ACLs
//! are not applied, `add` says so, leaves the tenant inactive and exits 1, unless
//! `--no-acls` was given.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use super::tenant::{TenantRouteConfig, parse_list, valid_id};
use super::tenant_acl as acl_ffi;
use super::tenant_grant::{
    ACL_CHILD_REFUSED, ACL_CHILD_UNSUPPORTED, AclOutcome, acl_child, ensure_password,
};
use super::{RouteKind, bundle};
use crate::config::Check;

/// `[routes.NAME.admin]`: what `sluice tenant` needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantAdminConfig {
    /// Bootstrap brokers, `host:port,...`.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Topic name template; must contain `{tenant}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of a new topic.
    #[serde(default = "default_one")]
    pub partitions: i32,
    /// Replication factor of a new topic.
    #[serde(default = "default_one")]
    pub replication: i32,
    /// `retention.ms` of a new topic, in hours (broker default when absent).
    #[serde(default)]
    pub retention_hours: Option<u64>,
    /// librdkafka properties for the admin connection (`security.protocol`,
    /// `ssl.ca.location`, `sasl.*`...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Brokers as tenants reach them (default: `brokers`), written into bundles.
    #[serde(default)]
    pub bundle_brokers: Option<String>,
    /// CA certificate copied into bundles.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Directory of `ID.crt` / `ID.key` client certificates copied into bundles.
    #[serde(default)]
    pub certs_dir: Option<PathBuf>,
    /// Directory of tenants' SCRAM passwords (`ID.password`, mode 0600). When
    /// set, `add` creates a SCRAM-SHA-512 credential for `User:ID` (a random
    /// password, kept in this directory and reused by later `add`s), and
    /// bundles carry it.
    #[serde(default)]
    pub credentials_dir: Option<PathBuf>,
}

fn default_topic() -> String {
    "logs-{tenant}".to_owned()
}

fn default_one() -> i32 {
    1
}

impl Default for TenantAdminConfig {
    fn default() -> Self {
        TenantAdminConfig {
            brokers: None,
            topic: default_topic(),
            partitions: 1,
            replication: 1,
            retention_hours: None,
            options: BTreeMap::new(),
            bundle_brokers: None,
            ca_file: None,
            certs_dir: None,
            credentials_dir: None,
        }
    }
}

impl TenantAdminConfig {
    /// Pure validation (called by the tenant route's).
    pub fn validate(&self, v: &mut Check<'_, '_>) {
        if !self.topic.contains("{tenant}") {
            v.error("admin", "admin.topic must contain {tenant}");
        }
        if self.partitions < 1 || self.replication < 1 {
            v.error(
                "admin",
                "admin.partitions and admin.replication must be at least 1",
            );
        }
    }

    /// The topic of a tenant.
    pub fn topic_of(&self, id: &str) -> String {
        self.topic.replace("{tenant}", id)
    }

    /// The tenant of a topic, when the topic follows the template.
    pub fn tenant_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let (pre, post) = self.topic.split_once("{tenant}")?;
        let id = topic.strip_prefix(pre)?.strip_suffix(post)?;
        valid_id(id).then_some(id)
    }
}

/// `sluice tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create the tenant's topic, grant ACLs, activate it.
    Add {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        target: Target,
        /// Partitions (default: admin.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: admin.replication).
        #[arg(long)]
        replication: Option<i32>,
        /// Retention in hours (default: admin.retention_hours, else the broker's).
        #[arg(long)]
        retention_hours: Option<u64>,
        /// Activate without ACLs (brokers without ACL support).
        #[arg(long)]
        no_acls: bool,
    },
    /// Deactivate a tenant (its topic and data stay).
    Remove {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List tenants: ids, topic, partitions, whether active.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Write a zip of ready consumer configs for a tenant.
    Bundle {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        target: Target,
        /// Zip file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Internal: apply ACLs in a child process (see the module doc).
    #[command(hide = true)]
    AclApply {
        /// Tenant id.
        id: String,
        /// Bootstrap brokers.
        #[arg(long)]
        brokers: String,
        /// The tenant's topic.
        #[arg(long)]
        topic: String,
        /// librdkafka properties, `key=value`.
        #[arg(long = "option")]
        options: Vec<String>,
        /// Delete the tenant's ACLs instead of creating them.
        #[arg(long)]
        revoke: bool,
        /// Set a SCRAM-SHA-512 credential for the tenant with the password in
        /// this file, before the ACLs.
        #[arg(long)]
        scram_password_file: Option<PathBuf>,
    },
}

/// Which config and route a command works on.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// TOML config file.
    #[arg(short, long)]
    config: PathBuf,
    /// The tenant route (needed when the config has several).
    #[arg(long)]
    route: Option<String>,
    /// Bootstrap brokers (default: the route's admin.brokers).
    #[arg(long)]
    brokers: Option<String>,
}

const EXIT_USAGE: u8 = 2;
const TIMEOUT: Duration = Duration::from_secs(15);

/// Run a `sluice tenant` command.
pub fn main(cmd: TenantCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cmd)) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("sluice tenant: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("sluice tenant: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

struct Resolved {
    route: TenantRouteConfig,
    brokers: Option<String>,
}

fn resolve(target: &Target) -> Result<Resolved, Failure> {
    let config =
        crate::config::load(&target.config).map_err(|e| Failure::Usage(anyhow::anyhow!("{e}")))?;
    let tenants: Vec<(&str, &TenantRouteConfig)> = config
        .routes
        .iter()
        .filter_map(|r| match &r.kind {
            RouteKind::Tenant(t) => Some((r.name.as_str(), t)),
            _ => None,
        })
        .collect();
    let chosen = match (&target.route, tenants.as_slice()) {
        (Some(name), _) => tenants.iter().find(|(n, _)| n == name).ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "no tenant route named `{name}` in {}",
                target.config.display()
            ))
        })?,
        (None, [only]) => only,
        (None, []) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "{} has no tenant route",
                target.config.display()
            )));
        }
        (None, _) => {
            let names: Vec<&str> = tenants.iter().map(|(n, _)| *n).collect();
            return Err(Failure::Usage(anyhow::anyhow!(
                "several tenant routes; pick one with --route ({})",
                names.join(", ")
            )));
        }
    };
    let (route_name, route) = (chosen.0, chosen.1.clone());
    // Brokers: --brokers, else admin.brokers, else those of the Kafka sink the
    // route feeds (or of the only Kafka sink).
    let kafka: Vec<(&crate::config::SinkConfig, &str)> = config
        .sinks
        .iter()
        .filter_map(|s| match &s.kind {
            crate::config::SinkKind::Kafka(k) => Some((s, k.brokers.as_str())),
            _ => None,
        })
        .collect();
    let fed = kafka
        .iter()
        .find(|(s, _)| s.inputs.iter().any(|i| i == route_name))
        .map(|(_, b)| *b);
    let only = match kafka.as_slice() {
        [(_, b)] => Some(*b),
        _ => None,
    };
    let brokers = target
        .brokers
        .clone()
        .or_else(|| route.admin.brokers.clone())
        .or_else(|| fed.or(only).map(str::to_owned));
    Ok(Resolved { route, brokers })
}

fn check_id(id: &str) -> Result<(), Failure> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(Failure::Usage(anyhow::anyhow!(
            "`{id}` is not a valid tenant id (1-200 of A-Z a-z 0-9 . _ -)"
        )))
    }
}

fn need_brokers(r: &Resolved) -> Result<&str, Failure> {
    r.brokers.as_deref().ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "no brokers: set admin.brokers on the tenant route, feed it to a kafka sink, or pass --brokers"
        ))
    })
}

fn admin_client(
    brokers: &str,
    options: &BTreeMap<String, String>,
) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in options {
        c.set(k, v);
    }
    c.create().context("creating the Kafka admin client")
}

async fn run(cmd: TenantCommand) -> Result<ExitCode, Failure> {
    match cmd {
        TenantCommand::Add {
            id,
            target,
            partitions,
            replication,
            retention_hours,
            no_acls,
        } => {
            check_id(&id)?;
            let r = resolve(&target)?;
            let brokers = need_brokers(&r)?.to_owned();
            let admin = &r.route.admin;
            let topic = admin.topic_of(&id);
            let partitions = partitions.unwrap_or(admin.partitions);
            let replication = replication.unwrap_or(admin.replication);
            let retention = retention_hours.or(admin.retention_hours);
            create_topic(
                &brokers,
                &admin.options,
                &topic,
                partitions,
                replication,
                retention,
            )
            .await?;
            if no_acls {
                println!(
                    "acls: skipped (--no-acls); any client allowed by the brokers can read {topic}"
                );
            } else {
                let password = match &admin.credentials_dir {
                    Some(dir) => Some(ensure_password(dir, &id).with_context(|| {
                        format!("the SCRAM password of {id} in {}", dir.display())
                    })?),
                    None => None,
                };
                let mut extra: Vec<String> = Vec::new();
                if let Some(p) = &password {
                    extra.push("--scram-password-file".into());
                    extra.push(p.display().to_string());
                }
                match acl_child(&brokers, &admin.options, &id, &topic, &extra) {
                    AclOutcome::Applied(lines) => {
                        for l in lines {
                            println!("acl: {l}");
                        }
                    }
                    AclOutcome::NotApplied(why) | AclOutcome::Unsupported(why) => {
                        eprintln!("sluice tenant: ACLs were NOT applied: {why}");
                        eprintln!(
                            "sluice tenant: {id} was not activated; fix the brokers' ACL support, or re-run with --no-acls to activate it without ACLs"
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            let list = &r.route.active_list;
            let added = edit_list(list, |ids| {
                if ids.iter().any(|i| i == &id) {
                    false
                } else {
                    ids.push(id.clone());
                    true
                }
            })
            .with_context(|| format!("updating the active list {}", list.display()))?;
            if added {
                println!(
                    "activated: {id} appended to {}; running agents pick it up within a second",
                    list.display()
                );
            } else {
                println!("active: {id} was already in {}", list.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Remove { id, target } => {
            check_id(&id)?;
            let r = resolve(&target)?;
            let mut revoke_failed = false;
            if let Some(brokers) = &r.brokers {
                let topic = r.route.admin.topic_of(&id);
                let extra = ["--revoke".to_owned()];
                match acl_child(brokers, &r.route.admin.options, &id, &topic, &extra) {
                    AclOutcome::Applied(lines) => {
                        for l in lines {
                            println!("acl: {l}");
                        }
                    }
                    AclOutcome::Unsupported(why) => println!("acls: none to revoke ({why})"),
                    AclOutcome::NotApplied(why) => {
                        eprintln!("sluice tenant: ACLs of {id} were NOT revoked: {why}");
                        revoke_failed = true;
                    }
                }
            } else {
                println!("acls: not revoked (no brokers configured)");
            }
            let list = &r.route.active_list;
            let removed = edit_list(list, |ids| {
                let before = ids.len();
                ids.retain(|i| i != &id);
                ids.len() != before
            })
            .with_context(|| format!("updating the active list {}", list.display()))?;
            if removed {
                println!(
                    "deactivated: {id} removed from {}; topic {} and its data are kept",
                    list.display(),
                    r.route.admin.topic_of(&id)
                );
            } else {
                println!("inactive: {id} was not in {}", list.display());
            }
            if revoke_failed {
                eprintln!("sluice tenant: re-run `tenant remove {id}` once the brokers answer");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::List { target } => {
            let r = resolve(&target)?;
            let active = match std::fs::read_to_string(&r.route.active_list) {
                Ok(t) => parse_list(&t).ids,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("reading {}", r.route.active_list.display()))
                        .into());
                }
            };
            let mut rows: BTreeMap<String, (String, Option<usize>, bool)> = active
                .iter()
                .map(|id| (id.clone(), (r.route.admin.topic_of(id), None, true)))
                .collect();
            let mut note = None;
            match &r.brokers {
                Some(brokers) => {
                    for (topic, parts) in topics(brokers, &r.route.admin.options).await? {
                        if let Some(id) = r.route.admin.tenant_of(&topic) {
                            let row = rows
                                .entry(id.to_owned())
                                .or_insert_with(|| (topic.clone(), None, false));
                            row.1 = Some(parts);
                        }
                    }
                }
                None => note = Some("no brokers configured: partitions unknown"),
            }
            println!(
                "{:<24} {:<32} {:>10} {:>6}",
                "ID", "TOPIC", "PARTITIONS", "ACTIVE"
            );
            for (id, (topic, parts, active)) in rows {
                let parts = parts.map_or_else(|| "-".to_owned(), |p| p.to_string());
                println!(
                    "{id:<24} {topic:<32} {parts:>10} {:>6}",
                    if active { "yes" } else { "no" }
                );
            }
            if let Some(n) = note {
                println!("({n})");
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Bundle { id, target, out } => {
            check_id(&id)?;
            let r = resolve(&target)?;
            let brokers = r
                .route
                .admin
                .bundle_brokers
                .clone()
                .or(r.brokers.clone())
                .ok_or_else(|| {
                    Failure::Usage(anyhow::anyhow!(
                        "no brokers: set admin.bundle_brokers or admin.brokers, or pass --brokers"
                    ))
                })?;
            let files = bundle::files(&id, &r.route.admin.topic_of(&id), &brokers, &r.route.admin)?;
            bundle::write_zip(&out, &id, &files)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("bundle: {} ({} files)", out.display(), files.len());
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::AclApply {
            id,
            brokers,
            topic,
            options,
            revoke,
            scram_password_file,
        } => {
            let mut opts = BTreeMap::new();
            for o in options {
                let (k, v) = o
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage(anyhow::anyhow!("--option wants key=value")))?;
                opts.insert(k.to_owned(), v.to_owned());
            }
            let admin = admin_client(&brokers, &opts)?;
            let result = if revoke {
                acl_ffi::revoke(&admin, &id, &topic)
            } else {
                let scram = match &scram_password_file {
                    Some(f) => std::fs::read_to_string(f)
                        .map_err(|e| format!("reading {}: {e}", f.display()))
                        .and_then(|pw| acl_ffi::set_scram(&admin, &id, pw.trim())),
                    None => Ok(String::new()),
                };
                scram.and_then(|line| {
                    let mut lines = acl_ffi::apply(&admin, &id, &topic)?;
                    if !line.is_empty() {
                        lines.insert(0, line);
                    }
                    Ok(lines)
                })
            };
            match result {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.starts_with(acl_ffi::UNSUPPORTED) => {
                    println!("{e}");
                    Ok(ExitCode::from(ACL_CHILD_UNSUPPORTED as u8))
                }
                Err(e) => {
                    println!("{e}");
                    Ok(ExitCode::from(ACL_CHILD_REFUSED as u8))
                }
            }
        }
    }
}

async fn create_topic(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i32,
    retention_hours: Option<u64>,
) -> anyhow::Result<()> {
    let admin = admin_client(brokers, options)?;
    let retention_ms = retention_hours.map(|h| (h * 3_600_000).to_string());
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if let Some(ms) = &retention_ms {
        new = new.set("retention.ms", ms);
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(TIMEOUT))
        .request_timeout(Some(TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .context("creating the topic")?;
    for r in results {
        match r {
            Ok(t) => {
                println!("topic: created {t} (partitions {partitions}, replication {replication})")
            }
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => println!("topic: {t} already exists"),
            Err((t, code)) => bail!("the brokers refused to create topic {t}: {code}"),
        }
    }
    Ok(())
}

/// (topic, partitions) of every topic on the brokers.
async fn topics(
    brokers: &str,
    options: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, usize)>> {
    let admin = admin_client(brokers, options)?;
    tokio::task::spawn_blocking(move || {
        let md = admin
            .inner()
            .fetch_metadata(None, TIMEOUT)
            .context("reading the brokers' metadata")?;
        Ok(md
            .topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect())
    })
    .await
    .context("metadata reader failed")?
}

/// Rewrite the list under an exclusive lock: `edit` changes the ids and says
/// whether anything changed; comments and blank lines of the file are kept.
pub fn edit_list(
    path: &Path,
    edit: impl FnOnce(&mut Vec<String>) -> bool,
) -> std::io::Result<bool> {
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let before = parse_list(&text).ids;
    let mut ids = before.clone();
    if !edit(&mut ids) {
        return Ok(false);
    }
    // Keep every line that is not a removed id; append the new ids.
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let id = line.split('#').next().unwrap_or("").trim();
        if !id.is_empty() && valid_id(id) && !ids.iter().any(|i| i == id) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for id in ids.iter().filter(|i| !before.contains(i)) {
        out.push_str(id);
        out.push('\n');
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_template_round_trips() {
        let a = TenantAdminConfig {
            topic: "cdn.{tenant}.logs".into(),
            ..Default::default()
        };
        assert_eq!(a.topic_of("acme"), "cdn.acme.logs");
        assert_eq!(a.tenant_of("cdn.acme.logs"), Some("acme"));
        assert_eq!(a.tenant_of("cdn..logs"), None);
        assert_eq!(a.tenant_of("other"), None);
    }

    #[test]
    fn edit_list_keeps_comments_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tenants.txt");
        std::fs::write(&p, "# customers\nacme # since 2024\nglobex\n").unwrap();
        assert!(
            edit_list(&p, |ids| {
                ids.push("initech".into());
                true
            })
            .unwrap()
        );
        assert!(
            edit_list(&p, |ids| {
                ids.retain(|i| i != "globex");
                true
            })
            .unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# customers\nacme # since 2024\ninitech\n"
        );
        assert!(!p.with_extension("tmp").exists());
        let missing = dir.path().join("new.txt");
        assert!(
            edit_list(&missing, |ids| {
                ids.push("a".into());
                true
            })
            .unwrap()
        );
        assert_eq!(std::fs::read_to_string(&missing).unwrap(), "a\n");
    }
}
