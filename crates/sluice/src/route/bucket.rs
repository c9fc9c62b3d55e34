//! `type = "bucket"`: Scribe's bucket store. A key taken from each event is hashed
//! into one of `buckets` outputs, `NAME.0` .. `NAME.{N-1}`; the event also carries
//! the number in `Event::bucket`, so a sink reading the route as a whole (`NAME`)
//! can use it (a Kafka sink's `partition = "{bucket}"`).
//!
//! The hash is Kafka's murmur2 (`toPositive(murmur2(key)) % N`, as the Java
//! client's default partitioner): the same key lands in the same bucket on every
//! host, across restarts, and in the same partition a Java producer would pick.
//!
//! Key: `key = "prefix"` is the body up to the first `delimiter` (the whole body
//! when it has none); any other value is a template (`{field.NAME}`, `{tenant}`,
//! `{tag}`).

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::event::Event;
use crate::template::Template;

/// The `key` value selecting the body prefix.
pub const PREFIX: &str = "prefix";

/// Most buckets a route may have.
pub const MAX_BUCKETS: u32 = 4096;

/// `[routes.NAME] type = "bucket"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BucketRouteConfig {
    /// Number of outputs.
    pub buckets: u32,
    /// `"prefix"` or a template.
    #[serde(default = "default_key")]
    pub key: String,
    /// Ends the prefix key.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
}

fn default_key() -> String {
    PREFIX.to_owned()
}

fn default_delimiter() -> String {
    ":".to_owned()
}

impl Validate for BucketRouteConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if !(1..=MAX_BUCKETS).contains(&self.buckets) {
            v.error("buckets", format!("must be between 1 and {MAX_BUCKETS}"));
        }
        if self.key != PREFIX
            && let Err(e) = Template::parse(&self.key, false, false)
        {
            v.error("key", format!("`prefix` or a template: {e}"));
        }
        if self.delimiter.is_empty() {
            v.error("delimiter", "must not be empty");
        }
    }
}

/// How the key is read.
#[derive(Debug, Clone)]
enum Key {
    Prefix(Box<memchr::memmem::Finder<'static>>),
    Template(Template),
}

/// The per-event logic of a bucket route.
#[derive(Debug, Clone)]
pub struct Bucketer {
    key: Key,
    buckets: u32,
}

impl Bucketer {
    /// From a validated config.
    pub fn new(config: &BucketRouteConfig) -> Result<Bucketer, String> {
        let key = if config.key == PREFIX {
            Key::Prefix(Box::new(
                memchr::memmem::Finder::new(config.delimiter.as_bytes()).into_owned(),
            ))
        } else {
            Key::Template(Template::parse(&config.key, false, false)?)
        };
        Ok(Bucketer {
            key,
            buckets: config.buckets.max(1),
        })
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// The bucket of an event; `scratch` holds rendered template keys.
    pub fn bucket_of(&self, e: &Event, scratch: &mut String) -> u32 {
        match &self.key {
            Key::Prefix(f) => {
                let end = f.find(&e.body).unwrap_or(e.body.len());
                bucket(&e.body[..end], self.buckets)
            }
            Key::Template(t) => {
                scratch.clear();
                t.render(e, scratch);
                bucket(scratch.as_bytes(), self.buckets)
            }
        }
    }
}

/// The bucket of `key` among `n` (Kafka's default partitioner).
pub fn bucket(key: &[u8], n: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) as u32 % n.max(1)
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::Value;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn keys_spread_within_ten_percent_and_stay_put() {
        let mut counts = [0u32; 5];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100_000 {
            // xorshift: random keys without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = format!("{state:x}");
            let b = bucket(key.as_bytes(), 5);
            assert_eq!(b, bucket(key.as_bytes(), 5));
            counts[b as usize] += 1;
        }
        for c in counts {
            assert!((18_000..=22_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn prefix_key_stops_at_delimiter_and_template_reads_fields() {
        let cfg = BucketRouteConfig {
            buckets: 7,
            key: PREFIX.into(),
            delimiter: "::".into(),
        };
        let b = Bucketer::new(&cfg).unwrap();
        let ev =
            |body: &'static [u8]| Event::new(Bytes::from_static(body), 0, "t".into(), "s".into());
        let mut s = String::new();
        assert_eq!(
            b.bucket_of(&ev(b"user1::a"), &mut s),
            b.bucket_of(&ev(b"user1::b"), &mut s)
        );
        assert_eq!(b.bucket_of(&ev(b"user1::a"), &mut s), bucket(b"user1", 7));
        assert_eq!(b.bucket_of(&ev(b"nodelim"), &mut s), bucket(b"nodelim", 7));

        let cfg = BucketRouteConfig {
            buckets: 7,
            key: "{field.user}".into(),
            delimiter: ":".into(),
        };
        let b = Bucketer::new(&cfg).unwrap();
        let mut e = ev(b"x");
        e.fields = Some(Arc::new(vec![(Value::from("user"), Value::from("u9"))]).into());
        assert_eq!(b.bucket_of(&e, &mut s), bucket(b"u9", 7));
    }
}
