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
//! - `bundle ID --out ID.zip`: ready consumer configs (see [`bundle`]).
//!
//! ACLs are never claimed without the broker's word. A broker that does not
//! advertise DescribeAcls/CreateAcls in its ApiVersions is reported as lacking
//! them. Otherwise the ACL calls run in a child process (`sluice tenant
//! acl-apply`): some brokers answer CreateAcls in a way that makes librdkafka
//! abort the process, and that must not take this command down with it. When ACLs
//! are not applied, `add` says so, leaves the tenant inactive and exits 1, unless
//! `--no-acls` was given.

mod acl;
mod active_list;
mod bundle;
mod grant;
mod run;

pub use active_list::edit_list;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::route::RouteKind;
use crate::route::tenant::{TenantRouteConfig, valid_id};

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
    match runtime.block_on(run::run(cmd)) {
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
