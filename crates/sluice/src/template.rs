//! Templates for paths, topics and keys: `{tag}`, `{source}`, `{tenant}`,
//! `{field.NAME}`, `{path}` (the captured file's path, from the event's origin),
//! `{bucket}` (the number a bucket route gave the event, empty without one) and,
//! where enabled, strftime items (`%Y-%m-%d`) in the literal text, rendered in UTC
//! from the event time.
//!
//! Parsed once at config time; rendering appends to a caller's `String`. Values
//! substituted into a *path* are sanitized (`/`, NUL and a leading `.` become `_`)
//! so an event's tag can never climb out of the configured directory. `{path}` always
//! renders with `/` as `_` (`/var/log/app.log` → `_var_log_app.log`): one name
//! component, legal in a Kafka topic when the path is made of letters, digits, `.`,
//! `_` and `-`.

use std::fmt::Write as _;

use crate::event::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// Literal text holding strftime items.
    Time(String),
    Tag,
    Source,
    Tenant,
    Field(String),
    /// `Origin::path`: the file a `fuse` capture was written to.
    Path,
    /// `Event::bucket` in decimal, set by a bucket route (empty without one).
    Bucket,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    for_path: bool,
}

impl Template {
    /// Parse `text`. `strftime` enables `%` items; `for_path` sanitizes values.
    pub fn parse(text: &str, strftime: bool, for_path: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            push_literal(&mut parts, &rest[..open], strftime)?;
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template `{text}`"))?;
            let name = &after[..close];
            parts.push(match name {
                "tag" => Part::Tag,
                "source" => Part::Source,
                "tenant" => Part::Tenant,
                "path" => Part::Path,
                "bucket" => Part::Bucket,
                _ => match name.strip_prefix("field.") {
                    Some(f) if !f.is_empty() => Part::Field(f.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` (use {{tag}}, {{source}}, {{tenant}}, {{path}}, {{bucket}} or {{field.NAME}})"
                        ));
                    }
                },
            });
            rest = &after[close + 1..];
        }
        push_literal(&mut parts, rest, strftime)?;
        Ok(Template { parts, for_path })
    }

    /// Whether rendering depends on more than tag, source, tenant and time.
    pub fn uses_fields(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(_) | Part::Path | Part::Bucket))
    }

    /// Whether every rendering can be a number: only `{bucket}`, `{field.NAME}` and
    /// literal digits (for a Kafka partition).
    pub fn is_numeric(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Bucket | Part::Field(_) => true,
            Part::Literal(s) => s.bytes().all(|b| b.is_ascii_digit()),
            _ => false,
        })
    }

    /// Whether rendering depends on the event time.
    pub fn uses_time(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Time(_)))
    }

    /// Whether every rendering is made of literal text and the fields `names`
    /// only.
    pub fn only_fields(&self, names: &[&str]) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Literal(_) => true,
            Part::Field(f) => names.contains(&f.as_str()),
            _ => false,
        })
    }

    /// Whether the template is a constant.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The directory every rendering lies in: the literal text before the first
    /// placeholder or strftime item, up to its last `/` (`./data/{tag}/%Y.log` →
    /// `./data/`; the parent for a constant path). Empty when the template starts
    /// with a placeholder.
    pub fn fixed_dir(&self) -> &str {
        let lead = match self.parts.first() {
            Some(Part::Literal(s)) if self.parts.len() == 1 => {
                return s.rfind('/').map_or("", |i| &s[..i.max(1)]);
            }
            Some(Part::Literal(s)) => s.as_str(),
            Some(Part::Time(s)) => &s[..s.find('%').unwrap_or(0)],
            _ => "",
        };
        lead.rfind('/').map_or("", |i| &lead[..i.max(1)])
    }

    /// Append the rendering for `event` to `out`.
    pub fn render(&self, event: &Event, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Time(fmt) => {
                    let t = chrono::DateTime::from_timestamp_nanos(event.time_ns);
                    let _ = write!(out, "{}", t.format(fmt));
                }
                Part::Tag => self.value(&event.tag, out),
                Part::Source => self.value(&event.source, out),
                Part::Tenant => self.value(event.tenant.as_deref().unwrap_or(""), out),
                Part::Field(name) => match event.field(name) {
                    Some(v) if v.is_nil() => {}
                    Some(v) => match v.as_bytes() {
                        Some(b) => self.value(&String::from_utf8_lossy(b), out),
                        None => self.value(&v.to_string(), out),
                    },
                    None => {}
                },
                Part::Path => {
                    let path = event.origin.as_ref().and_then(|o| o.path.as_deref());
                    for c in path.unwrap_or("").chars() {
                        out.push(match c {
                            '/' | '\0' => '_',
                            c => c,
                        });
                    }
                }
                Part::Bucket => {
                    if let Some(b) = event.bucket {
                        let _ = write!(out, "{b}");
                    }
                }
            }
        }
    }

    fn value(&self, v: &str, out: &mut String) {
        if !self.for_path {
            out.push_str(v);
            return;
        }
        for (i, c) in v.chars().enumerate() {
            out.push(match c {
                '/' | '\0' => '_',
                '.' if i == 0 => '_',
                c => c,
            });
        }
    }
}

fn push_literal(parts: &mut Vec<Part>, s: &str, strftime: bool) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if strftime && s.contains('%') {
        let items = chrono::format::StrftimeItems::new(s);
        if items
            .clone()
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            return Err(format!("invalid strftime item in `{s}`"));
        }
        parts.push(Part::Time(s.to_owned()));
    } else {
        parts.push(Part::Literal(s.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn fixed_dir_is_the_literal_lead_up_to_its_last_slash() {
        for (text, dir) in [
            ("./data/{tag}/%Y-%m-%d.log", "./data"),
            ("/var/log/sluice/apps/{tag}-%Y.log", "/var/log/sluice/apps"),
            ("/var/log/x/%Y/{tag}.log", "/var/log/x"),
            ("/var/log/x/out.log", "/var/log/x"),
            ("/out.log", "/"),
            ("out.log", ""),
            ("{tag}/x.log", ""),
            ("/{tag}.log", "/"),
        ] {
            let t = Template::parse(text, true, true).unwrap();
            assert_eq!(t.fixed_dir(), dir, "{text}");
        }
    }

    use bytes::Bytes;

    use super::*;
    use crate::event::Value;

    fn ev() -> Event {
        let mut e = Event::new(
            Bytes::new(),
            1_700_000_000_000_000_000,
            "../app/x".into(),
            "src".into(),
        );
        e.fields = Some(Arc::new(vec![(Value::from("host"), Value::from("h1"))]).into());
        e
    }

    #[test]
    fn renders_placeholders_and_time() {
        let t = Template::parse("/d/{source}/%Y-%m-%d/{tag}-{field.host}.log", true, true).unwrap();
        let mut s = String::new();
        t.render(&ev(), &mut s);
        assert_eq!(s, "/d/src/2023-11-14/_._app_x-h1.log");
    }

    #[test]
    fn topic_values_are_not_sanitized_and_percent_is_literal() {
        let t = Template::parse("logs-{tag}-100%", false, false).unwrap();
        let mut s = String::new();
        t.render(&ev(), &mut s);
        assert_eq!(s, "logs-../app/x-100%");
    }

    #[test]
    fn path_is_the_captured_file_as_one_name_component() {
        use crate::event::Origin;
        let t = Template::parse("logs{path}", false, false).unwrap();
        assert!(t.uses_fields() && !t.is_static());
        let mut e = ev();
        let mut s = String::new();
        t.render(&e, &mut s);
        assert_eq!(s, "logs", "no origin: empty");
        e.origin = Some(Arc::new(Origin {
            path: Some("/var/log/app/api.log".into()),
            ..Origin::default()
        }));
        s.clear();
        t.render(&e, &mut s);
        assert_eq!(s, "logs_var_log_app_api.log");
        let p = Template::parse("/archive/{path}.%Y", true, true).unwrap();
        s.clear();
        p.render(&e, &mut s);
        assert_eq!(s, "/archive/_var_log_app_api.log.2023");
    }

    #[test]
    fn bucket_renders_the_route_assigned_number() {
        let t = Template::parse("{bucket}", false, false).unwrap();
        assert!(t.uses_fields() && t.is_numeric());
        let mut e = Event::new(Bytes::new(), 0, "t".into(), "s".into());
        let mut s = String::new();
        t.render(&e, &mut s);
        assert_eq!(s, "", "no bucket route: empty");
        e.bucket = Some(3);
        t.render(&e, &mut s);
        assert_eq!(s, "3");
        assert!(
            Template::parse("1{field.p}", false, false)
                .unwrap()
                .is_numeric()
        );
        assert!(!Template::parse("{tag}", false, false).unwrap().is_numeric());
        let f = Template::parse("a/{field.x}-{field.y}", true, true).unwrap();
        assert!(f.only_fields(&["x", "y"]) && !f.only_fields(&["x"]));
        assert!(
            !Template::parse("%Y/{field.x}", true, true)
                .unwrap()
                .only_fields(&["x"])
        );
        assert!(
            !Template::parse("p{bucket}", false, false)
                .unwrap()
                .is_numeric()
        );
    }

    #[test]
    fn rejects_unknown_placeholder_and_unclosed() {
        assert!(Template::parse("{nope}", false, false).is_err());
        assert!(Template::parse("a{tag", false, false).is_err());
        assert!(Template::parse("%Q", true, true).is_err());
    }
}
