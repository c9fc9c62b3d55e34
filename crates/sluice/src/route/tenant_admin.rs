//! `[routes.NAME.admin]`: the tenant route's settings for onboarding commands
//! (`sluice tenant`, in `crate::commands::tenant`): brokers, the topic template,
//! partitions, ACL and credential options, what bundles carry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::tenant::valid_id;
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
}
