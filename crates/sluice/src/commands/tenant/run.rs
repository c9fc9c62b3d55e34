//! The bodies of `sluice tenant add/remove/list/bundle/acl-apply`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::acl as acl_ffi;
use super::grant::{
    ACL_CHILD_REFUSED, ACL_CHILD_UNSUPPORTED, AclOutcome, acl_child, ensure_password,
};
use super::{Failure, TIMEOUT, TenantCommand, bundle, check_id, edit_list, need_brokers, resolve};
use crate::route::tenant::parse_list;

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

pub(super) async fn run(cmd: TenantCommand) -> Result<ExitCode, Failure> {
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
