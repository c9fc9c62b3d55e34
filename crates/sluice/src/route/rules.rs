//! `type = "rules"`: Scribe's category routing. Each event's tag is matched against
//! the rules in order; the first match names the output port (`to`), `"drop"`
//! discards. Unmatched events go to `default` (discarded when there is none).
//!
//! Globs follow Fluentd's tag matching, with `.` separating the parts of a tag:
//! `*` matches within one part (`ignore*` matches `ignore_me`, not `ignore.x`),
//! `**` matches zero or more parts (`app.**` matches `app`, `app.web`,
//! `app.web.1`), `?` one character other than `.`, `{a,b}` either alternative.
//! Everything else is literal.
//!
//! Events of one batch usually share their tag, so the last tag's decision is
//! reused: a batch of one tag costs one match.

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::event::Event;

/// The reserved target that discards events.
pub const DROP: &str = "drop";

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob on the tag.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Output port, or `"drop"`.
    pub to: String,
}

/// `[routes.NAME] type = "rules"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RulesRouteConfig {
    /// Rules in priority order.
    pub rules: Vec<Rule>,
    /// Port for unmatched events (absent: they are discarded, counted).
    #[serde(default)]
    pub default: Option<String>,
}

/// Whether `port` is usable as an output port name.
pub fn valid_port(port: &str) -> bool {
    !port.is_empty()
        && port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Validate for RulesRouteConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.rules.is_empty() && self.default.is_none() {
            v.error("rules", "needs at least one rule or a default");
        }
        for (i, r) in self.rules.iter().enumerate() {
            if let Err(e) = Glob::parse(&r.pattern) {
                v.error("rules", format!("rule {}: {e}", i + 1));
            }
            if !valid_port(&r.to) {
                v.error(
                    "rules",
                    format!("rule {}: `to` uses letters, digits, '_' and '-'", i + 1),
                );
            }
        }
        if let Some(d) = &self.default
            && !valid_port(d)
        {
            v.error("default", "uses letters, digits, '_' and '-'");
        }
    }
}

impl RulesRouteConfig {
    /// Output ports in first-use order (rules, then default), without `drop`.
    pub fn ports(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let targets = self
            .rules
            .iter()
            .map(|r| &r.to)
            .chain(self.default.as_ref());
        for t in targets {
            if t != DROP && !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

/// Where an event goes: a port index, or discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Index into [`RulesRouteConfig::ports`].
    Port(usize),
    /// Discarded by a `drop` rule or for want of a default.
    Drop,
}

/// Compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<(Glob, Target)>,
    default: Target,
}

impl Rules {
    /// Compile a validated config.
    pub fn new(config: &RulesRouteConfig) -> Result<Rules, String> {
        let ports = config.ports();
        let target = |to: &str| match ports.iter().position(|p| p == to) {
            Some(i) => Target::Port(i),
            None => Target::Drop,
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for r in &config.rules {
            rules.push((Glob::parse(&r.pattern)?, target(&r.to)));
        }
        let default = config.default.as_deref().map_or(Target::Drop, target);
        Ok(Rules { rules, default })
    }

    /// The target of a tag: the first matching rule's, else the default.
    pub fn target(&self, tag: &str) -> Target {
        self.rules
            .iter()
            .find(|(g, _)| g.matches(tag))
            .map_or(self.default, |(_, t)| *t)
    }

    /// Targets of each event, reusing the previous decision while the tag repeats.
    pub fn targets<'e>(&'e self, events: &'e [Event]) -> impl Iterator<Item = Target> + 'e {
        let mut last: Option<(&'e str, Target)> = None;
        events.iter().map(move |e| match last {
            Some((tag, t)) if tag == &*e.tag => t,
            _ => {
                let t = self.target(&e.tag);
                last = Some((&e.tag, t));
                t
            }
        })
    }
}

/// A compiled tag glob (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// Alternatives after expanding `{a,b}`; matches when any does.
    alternatives: Vec<Vec<Tok>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    /// `?`: one byte other than `.`.
    One,
    /// `*`: any run without `.`.
    Star,
    /// `**` standing alone: any run.
    Any,
    /// `.**` at a part boundary: nothing, or `.` and any run.
    DotAny,
    /// `**.` at the start: nothing, or any run ending in `.`.
    AnyDot,
}

const MAX_ALTERNATIVES: usize = 64;

impl Glob {
    /// Compile a pattern.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        let mut alternatives = Vec::new();
        for text in expand_braces(pattern)? {
            alternatives.push(compile(&text));
        }
        Ok(Glob { alternatives })
    }

    /// Whether `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.alternatives
            .iter()
            .any(|toks| match_toks(toks, tag.as_bytes()))
    }
}

fn expand_braces(p: &str) -> Result<Vec<String>, String> {
    let Some(open) = p.find('{') else {
        if p.contains('}') {
            return Err(format!("unmatched `}}` in `{p}`"));
        }
        return Ok(vec![p.to_owned()]);
    };
    let close = p[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("unclosed `{{` in `{p}`"))?;
    let inner = &p[open + 1..close];
    if inner.contains('{') {
        return Err(format!("nested `{{` in `{p}`"));
    }
    let (head, tail) = (&p[..open], &p[close + 1..]);
    let mut out = Vec::new();
    for rest in expand_braces(tail)? {
        for alt in inner.split(',') {
            out.push(format!("{head}{alt}{rest}"));
            if out.len() > MAX_ALTERNATIVES {
                return Err(format!(
                    "more than {MAX_ALTERNATIVES} alternatives in `{p}`"
                ));
            }
        }
    }
    Ok(out)
}

fn compile(p: &str) -> Vec<Tok> {
    let b = p.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starstar = |j: usize| b.get(j) == Some(&b'*') && b.get(j + 1) == Some(&b'*');
        if b[i] == b'.' && starstar(i + 1) && matches!(b.get(i + 3), None | Some(b'.')) {
            toks.push(Tok::DotAny);
            i += 3;
        } else if i == 0 && starstar(0) && b.get(2) == Some(&b'.') {
            toks.push(Tok::AnyDot);
            i += 3;
        } else if starstar(i) {
            toks.push(Tok::Any);
            i += 2;
        } else {
            toks.push(match b[i] {
                b'*' => Tok::Star,
                b'?' => Tok::One,
                c => Tok::Byte(c),
            });
            i += 1;
        }
    }
    toks
}

fn match_toks(toks: &[Tok], s: &[u8]) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Byte(c) => s.first() == Some(c) && match_toks(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|&c| c != b'.') && match_toks(rest, &s[1..]),
        Tok::Star => {
            let limit = memchr::memchr(b'.', s).unwrap_or(s.len());
            (0..=limit).any(|n| match_toks(rest, &s[n..]))
        }
        Tok::Any => (0..=s.len()).any(|n| match_toks(rest, &s[n..])),
        Tok::DotAny => {
            match_toks(rest, s)
                || (s.first() == Some(&b'.') && (1..=s.len()).any(|n| match_toks(rest, &s[n..])))
        }
        Tok::AnyDot => {
            match_toks(rest, s)
                || memchr::memchr_iter(b'.', s).any(|i| match_toks(rest, &s[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn g(p: &str) -> Glob {
        Glob::parse(p).unwrap()
    }

    #[test]
    fn star_stays_within_one_part() {
        assert!(g("ignore*").matches("ignore"));
        assert!(g("ignore*").matches("ignore_me"));
        assert!(!g("ignore*").matches("ignore.me"));
        assert!(g("a.*").matches("a.b"));
        assert!(!g("a.*").matches("a"));
        assert!(!g("a.*").matches("a.b.c"));
        assert!(g("a.?").matches("a.b"));
        assert!(!g("a?b").matches("a.b"));
    }

    #[test]
    fn double_star_spans_zero_or_more_parts() {
        for t in ["app", "app.web", "app.web.1"] {
            assert!(g("app.**").matches(t), "{t}");
        }
        assert!(!g("app.**").matches("apple"));
        assert!(g("**.err").matches("err"));
        assert!(g("**.err").matches("a.b.err"));
        assert!(!g("**.err").matches("a.xerr"));
        assert!(g("a.**.z").matches("a.z"));
        assert!(g("a.**.z").matches("a.b.c.z"));
        assert!(g("**").matches("anything.at.all"));
    }

    #[test]
    fn braces_and_literals() {
        assert!(g("{web,api}.log").matches("api.log"));
        assert!(!g("{web,api}.log").matches("db.log"));
        assert!(g("bucket_me").matches("bucket_me"));
        assert!(!g("bucket_me").matches("bucket_me2"));
        assert!(Glob::parse("a{b").is_err());
        assert!(Glob::parse("").is_err());
    }

    fn config() -> RulesRouteConfig {
        let rule = |m: &str, t: &str| Rule {
            pattern: m.into(),
            to: t.into(),
        };
        RulesRouteConfig {
            rules: vec![
                rule("ignore*", "drop"),
                rule("bucket_me", "bucketed"),
                rule("app.**", "apps"),
                rule("app.x", "never"),
            ],
            default: Some("rest".into()),
        }
    }

    #[test]
    fn first_match_wins_then_default() {
        let c = config();
        assert_eq!(c.ports(), vec!["bucketed", "apps", "never", "rest"]);
        let r = Rules::new(&c).unwrap();
        assert_eq!(r.target("ignore_this"), Target::Drop);
        assert_eq!(r.target("bucket_me"), Target::Port(0));
        assert_eq!(r.target("app.x"), Target::Port(1), "app.** comes first");
        assert_eq!(r.target("other"), Target::Port(3));
    }

    #[test]
    fn no_default_discards_unmatched() {
        let mut c = config();
        c.default = None;
        assert_eq!(Rules::new(&c).unwrap().target("other"), Target::Drop);
    }

    #[test]
    fn targets_reuse_the_decision_for_a_repeated_tag() {
        let r = Rules::new(&config()).unwrap();
        let ev = |t: &str| Event::new(Bytes::new(), 0, Arc::from(t), "s".into());
        let events = vec![ev("app.a"), ev("app.a"), ev("ignore"), ev("zzz")];
        let t: Vec<Target> = r.targets(&events).collect();
        assert_eq!(
            t,
            vec![
                Target::Port(1),
                Target::Port(1),
                Target::Drop,
                Target::Port(3)
            ]
        );
    }
}
