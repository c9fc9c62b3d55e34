//! Loading: environment interpolation, TOML parsing with spans, per-component
//! deserialization, and error reporting as `FILE:LINE:COL: key: what is wrong`.
//!
//! Every error found is collected; nothing stops at the first one except a TOML
//! syntax error (the parser cannot go on). Unknown keys are found by comparing a
//! table's keys with the field names serde derives for the target struct
//! ([`struct_fields`]), so each unknown key gets its own line and a did-you-mean.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer, Visitor};
use toml_edit::{ImDocument, Item, Table};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted key path (`sinks.out.path`), or the file for file-level errors.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.position.unwrap_or((1, 1));
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            line,
            col,
            self.key,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in a config file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against one source text.
pub struct Diagnostics<'a> {
    file: &'a Path,
    text: &'a str,
    /// Collected errors.
    pub errors: Vec<ConfigError>,
}

impl<'a> Diagnostics<'a> {
    /// A collector for `text` read from `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Diagnostics {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Record an error at a byte span of the text.
    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let position = span.map(|s| line_col(self.text, s.start));
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Sort errors by position and return them.
    pub fn finish(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| e.position.unwrap_or((0, 0)));
        self.errors
    }
}

/// 1-based (line, column in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Replace `${VAR}` and `${VAR:-default}` with environment values; `$$` is a
/// literal `$`. Unset variables without a default are errors at their position.
/// Whole-line comments are left alone, so examples can mention `${SECRET}`.
pub fn interpolate(text: &str, diag: &mut Diagnostics<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            interpolate_line(line, line_start, &mut out, diag);
        }
        line_start += line.len();
    }
    out
}

fn interpolate_line(line: &str, mut offset: usize, out: &mut String, diag: &mut Diagnostics<'_>) {
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            offset += i + 2;
            rest = stripped;
            continue;
        }
        let reference = after
            .strip_prefix('{')
            .and_then(|body| Some((body, body.find('}')?)))
            .map(|(body, end)| (&body[..end], end))
            .filter(|(inner, _)| {
                let name = inner.split_once(":-").map_or(*inner, |(n, _)| n);
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        let Some((inner, end)) = reference else {
            out.push('$');
            offset += i + 1;
            rest = after;
            continue;
        };
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (Err(_), None) => diag.error(
                Some(offset + i..offset + i + 1),
                format!("${{{name}}}"),
                "environment variable is not set (use ${NAME:-default} for a default)",
            ),
            (Ok(v), None) => out.push_str(&v),
        }
        let used = i + 2 + end + 1;
        offset += used;
        rest = &rest[used..];
    }
    out.push_str(rest);
}

/// Parse TOML keeping spans; a syntax error is reported and yields `None`.
pub fn parse(text: &str, diag: &mut Diagnostics<'_>) -> Option<ImDocument<String>> {
    match ImDocument::parse(text.to_owned()) {
        Ok(doc) => Some(doc),
        Err(e) => {
            let msg = e.message().trim().trim_end_matches('.').to_owned();
            diag.error(e.span(), "toml", first_line_lower(&msg));
            None
        }
    }
}

fn first_line_lower(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let joined = joined.join(": ");
    let line = joined.as_str();
    let mut chars = line.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Deserialize `item` into `T`; on failure record the error with the best key path
/// and span the deserializer gave.
pub fn deserialize<T: DeserializeOwned>(
    item: &Item,
    path: &str,
    table: Option<&Table>,
    diag: &mut Diagnostics<'_>,
) -> Option<T> {
    let Some(value) = item.clone().into_value().ok() else {
        diag.error(item.span(), path, "expected a table");
        return None;
    };
    let span_fallback = item.span();
    match T::deserialize(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().or(span_fallback);
            let key = table
                .and_then(|t| key_at(t, span.clone()))
                .map_or_else(|| path.to_owned(), |k| format!("{path}.{k}"));
            diag.error(span, key, first_line_lower(e.message()));
            None
        }
    }
}

/// The key of `table` whose key or value span contains `span`.
fn key_at(table: &Table, span: Option<Range<usize>>) -> Option<String> {
    let span = span?;
    for (k, v) in table.iter() {
        let key_span = table.key(k).and_then(|key| key.span());
        let inside = |r: Option<Range<usize>>| {
            r.is_some_and(|r| r.start <= span.start && span.end <= r.end.max(r.start + 1))
        };
        if inside(key_span) || inside(v.span()) {
            return Some(k.to_owned());
        }
    }
    None
}

/// Report every key of `table` not in `known`, with a did-you-mean.
pub fn check_keys(table: &Table, known: &[&str], path: &str, diag: &mut Diagnostics<'_>) {
    for (k, v) in table.iter() {
        if known.contains(&k) {
            continue;
        }
        let span = table.key(k).and_then(|key| key.span()).or_else(|| v.span());
        let mut msg = "unknown key".to_owned();
        if let Some(s) = did_you_mean(k, known.iter().copied()) {
            msg.push_str(&format!(", did you mean `{s}`?"));
        } else {
            let mut list: Vec<&str> = known.to_vec();
            list.sort_unstable();
            msg.push_str(&format!(" (known keys: {})", list.join(", ")));
        }
        diag.error(span, format!("{path}.{k}"), msg);
    }
}

/// The closest candidate, if close enough to be a likely typo: few edits
/// (transpositions count as one) or a high Jaro-Winkler similarity.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let max_edits = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let edits = strsim::damerau_levenshtein(word, c);
            let similar = strsim::jaro_winkler(word, c);
            (edits <= max_edits || similar > 0.85).then_some((edits, c))
        })
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, c)| c)
}

/// Field names serde derives for a struct (no `flatten`), found by asking the
/// derived `Deserialize` impl to describe itself.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

struct Introspect<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for Introspect<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("introspection only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("introspection only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn interpolation_uses_env_and_defaults() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SLUICE_TEST_X", "hello") };
        let p = Path::new("c.toml");
        let mut d = Diagnostics::new(p, "");
        let out = interpolate(
            "a=${SLUICE_TEST_X} b=${SLUICE_NOPE:-dflt} c=$$x d=$HOME",
            &mut d,
        );
        assert_eq!(out, "a=hello b=dflt c=$x d=$HOME");
        assert!(d.errors.is_empty());
        let text = "x = 1\ny = \"${SLUICE_NOPE_2}\"";
        let mut d = Diagnostics::new(p, text);
        interpolate(text, &mut d);
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].position, Some((2, 6)));
    }

    #[test]
    fn did_you_mean_finds_typos() {
        assert_eq!(did_you_mean("pth", ["path", "inputs"]), Some("path"));
        assert_eq!(did_you_mean("zzzz", ["path", "inputs"]), None);
        assert_eq!(did_you_mean("gne", ["gen", "other"]), Some("gen"));
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct S {
        alpha: u32,
        #[serde(default)]
        beta: Option<String>,
    }

    #[test]
    fn introspection_lists_fields() {
        assert_eq!(struct_fields::<S>(), &["alpha", "beta"]);
    }
}
