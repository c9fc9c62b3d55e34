//! librdkafka settings: our defaults first, the user's table last (aliases
//! included), checked without creating a client.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

/// How often librdkafka reports its statistics when the API is on.
pub const STATS_INTERVAL_MS: u32 = 5000;

/// librdkafka settings in application order: later entries win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

/// Names librdkafka treats as the same setting; setting one must replace the others.
const ALIASES: &[&[&str]] = &[
    &["bootstrap.servers", "metadata.broker.list"],
    &["acks", "request.required.acks"],
    &["compression.codec", "compression.type"],
    &["linger.ms", "queue.buffering.max.ms"],
    &["message.timeout.ms", "delivery.timeout.ms"],
    &["retries", "message.send.max.retries"],
    &["retry.backoff.ms"],
];

fn same_setting(a: &str, b: &str) -> bool {
    a == b
        || ALIASES
            .iter()
            .any(|group| group.contains(&a) && group.contains(&b))
}

impl Properties {
    /// Empty set.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Set `key`, replacing it and its aliases.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.entries.retain(|(k, _)| !same_setting(k, key));
        self.entries.push((key.to_owned(), value.into()));
    }

    /// The value of `key` or of one of its aliases.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| same_setting(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// Ask librdkafka for its statistics every [`STATS_INTERVAL_MS`] (the
    /// metrics endpoint exports them), unless the user's table chose an interval
    /// (`0` turns them off).
    pub fn ask_statistics(&mut self) {
        if self.get("statistics.interval.ms").is_none() {
            self.set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
        }
    }

    /// All entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.entries {
            c.set(k, v);
        }
        c
    }
}

/// Whether librdkafka accepts `key = value` (pure: no client is created, no I/O).
pub fn check_property(key: &str, value: &str) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(key, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => {
            Err(lower_first(desc.trim_end_matches('.')))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn creation_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            format!(
                "librdkafka rejects `{key}` = `{value}`: {}",
                lower_first(desc.trim_end_matches('.'))
            )
        }
        KafkaError::ClientCreation(msg) => lower_first(msg.trim_end_matches('.')),
        other => other.to_string(),
    }
}
