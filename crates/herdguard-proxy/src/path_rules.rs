//! Per-path rules (`[[rule]]` in the TOML file), as nginx's `location` with
//! `proxy_cache_valid` / `proxy_ignore_headers` or the basics of a Varnish VCL:
//! for requests whose path matches, a lifetime for responses that state none,
//! a bypass, opt-ins to ignore the origin's `Cache-Control` or `Set-Cookie`,
//! and a largest stored response.
//!
//! Rules match the request's path after the proxy normalised it (dot-segments
//! removed, percent-encodings normalised, the forms it refuses refused: see
//! `herdguard_http::target`) — the same string the cache key and the origin
//! get — so `/a/../private` or `/%70rivate` cannot slip past a rule for
//! `/private`. The first rule that matches, in file order, applies; the query
//! takes no part.

use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use crate::config::ConfigError;

/// How a rule picks its paths.
#[derive(Clone, Debug)]
enum PathMatch {
    /// Paths starting with this text.
    Prefix(String),
    /// Paths matching a glob: `*` and `?` within a segment, `**` across them,
    /// `{a,b}` alternatives, `[...]` classes.
    Glob(GlobMatcher),
}

/// One `[[rule]]`, validated.
#[derive(Clone, Debug)]
pub(crate) struct PathRule {
    /// `prefix` or `glob`, as written (for the log).
    pub pattern: String,
    matcher: PathMatch,
    /// The freshness lifetime of responses that state none (instead of a
    /// heuristic or nothing), or of every response with `ignore_cache_control`.
    pub ttl: Option<Duration>,
    /// Never answered from or stored in the cache: each request goes to the
    /// origin on its own.
    pub bypass: bool,
    /// The origin's `Cache-Control`, `Expires`, `Pragma` and targeted fields
    /// are not consulted (they still reach the client).
    pub ignore_cache_control: bool,
    /// A response with `Set-Cookie` is stored, without its `Set-Cookie`
    /// (which then reaches no client).
    pub ignore_set_cookie: bool,
    /// The largest response stored (larger ones stream through uncached).
    pub max_object_bytes: Option<usize>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Glob(g) => g.is_match(path),
        }
    }
}

/// The rules of one configuration, in file order.
#[derive(Clone, Debug, Default)]
pub struct PathRules(Vec<PathRule>);

impl PathRules {
    /// The rule for `path` (normalised, without the query): the first that matches.
    pub(crate) fn for_path(&self, path: &str) -> Option<&PathRule> {
        if self.0.is_empty() {
            return None;
        }
        // An origin may decode an encoded slash before it routes: rules see it decoded.
        if path.contains("%2F") {
            let decoded = path.replace("%2F", "/");
            return self.0.iter().find(|r| r.matches(&decoded));
        }
        self.0.iter().find(|r| r.matches(path))
    }

    /// The rules' patterns in order, comma-separated (for the log).
    pub fn patterns(&self) -> String {
        let all: Vec<&str> = self.0.iter().map(|r| r.pattern.as_str()).collect();
        all.join(",")
    }

    /// Lowers every rule's largest stored response to at most `cap` bytes.
    pub(crate) fn cap_objects(&mut self, cap: usize) {
        for rule in &mut self.0 {
            rule.max_object_bytes = rule.max_object_bytes.map(|n| n.min(cap));
        }
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A size in the TOML file: `"2MiB"` or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RuleSize {
    Bytes(u64),
    Text(String),
}

/// A `[[rule]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    prefix: Option<String>,
    glob: Option<String>,
    ttl_secs: Option<u64>,
    #[serde(default)]
    bypass: bool,
    #[serde(default)]
    ignore_cache_control: bool,
    #[serde(default)]
    ignore_set_cookie: bool,
    max_object_bytes: Option<RuleSize>,
}

/// Validates the `[[rule]]` tables; `max_object` caps a rule's
/// `max_object_bytes` (the share of the memory budget one response may take).
pub(crate) fn resolve(rules: Vec<RuleFile>, max_object: u64) -> Result<PathRules, ConfigError> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| resolve_one(i, rule, max_object))
        .collect::<Result<Vec<_>, _>>()
        .map(PathRules)
}

fn resolve_one(i: usize, rule: RuleFile, max_object: u64) -> Result<PathRule, ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError {
        field: format!("rule[{i}].{field}"),
        reason,
    };
    let (pattern, matcher) = match (rule.prefix, rule.glob) {
        (Some(p), None) if p.starts_with('/') => (p.clone(), PathMatch::Prefix(p)),
        (None, Some(g)) if g.starts_with('/') => {
            let glob = GlobBuilder::new(&g)
                // `*` stays within a path segment; `**` crosses them.
                .literal_separator(true)
                .build()
                .map_err(|e| invalid("glob", format!("{g:?}: {}", e.kind())))?;
            (g, PathMatch::Glob(glob.compile_matcher()))
        }
        (Some(p), None) => return Err(invalid("prefix", format!("{p:?} must start with /"))),
        (None, Some(g)) => return Err(invalid("glob", format!("{g:?} must start with /"))),
        _ => {
            return Err(invalid(
                "prefix",
                "give exactly one of prefix or glob".to_string(),
            ))
        }
    };
    let ttl = match rule.ttl_secs {
        Some(0) => return Err(invalid("ttl_secs", "must be greater than zero".into())),
        other => other.map(Duration::from_secs),
    };
    let max_object_bytes = match rule.max_object_bytes {
        None => None,
        Some(RuleSize::Bytes(0)) => {
            return Err(invalid(
                "max_object_bytes",
                "must be greater than zero".into(),
            ))
        }
        Some(RuleSize::Bytes(n)) => Some(n),
        Some(RuleSize::Text(t)) => Some(
            t.trim()
                .parse::<bytesize::ByteSize>()
                .ok()
                .map(|b| b.as_u64())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    invalid(
                        "max_object_bytes",
                        format!("{t:?} is not a size like 512KiB or 2MiB"),
                    )
                })?,
        ),
    }
    .map(|n| usize::try_from(n.min(max_object)).unwrap_or(usize::MAX));
    if rule.bypass
        && (ttl.is_some()
            || rule.ignore_cache_control
            || rule.ignore_set_cookie
            || max_object_bytes.is_some())
    {
        return Err(invalid(
            "bypass",
            "a bypassed path is never stored: give it no other setting".into(),
        ));
    }
    if rule.ignore_cache_control && ttl.is_none() {
        return Err(invalid(
            "ignore_cache_control",
            "needs ttl_secs (how long to keep what the origin's fields no longer say)".into(),
        ));
    }
    Ok(PathRule {
        pattern,
        matcher,
        ttl,
        bypass: rule.bypass,
        ignore_cache_control: rule.ignore_cache_control,
        ignore_set_cookie: rule.ignore_set_cookie,
        max_object_bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One rule from the body of a `[[rule]]` table (other modules' tests).
    pub(crate) fn single(body: &str) -> PathRule {
        let mut rules = rules(&format!("[[rule]]\n{body}")).expect("test rule is valid");
        rules.0.remove(0)
    }

    fn rules(toml_text: &str) -> Result<PathRules, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            rule: Vec<RuleFile>,
        }
        let file: File = toml::from_str(toml_text).expect("test TOML parses");
        resolve(file.rule, 1 << 20)
    }

    #[test]
    fn the_first_matching_rule_applies_and_globs_stay_in_their_segment() {
        let r = rules(
            r#"
            [[rule]]
            glob = "/api/*/price"
            ttl_secs = 5
            [[rule]]
            prefix = "/api/"
            bypass = true
            [[rule]]
            glob = "/static/**/*.{css,js}"
            ttl_secs = 3600
            max_object_bytes = "4MiB"
            "#,
        )
        .unwrap();
        let pattern = |path: &str| r.for_path(path).map(|rule| rule.pattern.as_str());
        assert_eq!(pattern("/api/eu/price"), Some("/api/*/price"));
        // `*` does not cross a `/`: the prefix rule is next.
        assert_eq!(pattern("/api/eu/de/price"), Some("/api/"));
        assert_eq!(
            pattern("/static/a/b/site.css"),
            Some("/static/**/*.{css,js}")
        );
        assert_eq!(pattern("/static/site.png"), None);
        assert_eq!(pattern("/other"), None);
        // An encoded slash (normalised to upper-case hex) is a slash to rules.
        assert_eq!(pattern("/api%2Feu%2Fprice"), Some("/api/*/price"));
        // Capped by the memory share of one object.
        assert_eq!(
            r.for_path("/static/x.js").unwrap().max_object_bytes,
            Some(1 << 20)
        );
    }

    #[test]
    fn bad_rules_name_their_index_and_field() {
        for (text, field) in [
            ("[[rule]]\nttl_secs = 5", "rule[0].prefix"),
            ("[[rule]]\nprefix = \"/a\"\nglob = \"/b\"", "rule[0].prefix"),
            ("[[rule]]\nprefix = \"a\"", "rule[0].prefix"),
            ("[[rule]]\nglob = \"/a/[\"", "rule[0].glob"),
            (
                "[[rule]]\nprefix = \"/\"\n[[rule]]\nprefix = \"/a\"\nttl_secs = 0",
                "rule[1].ttl_secs",
            ),
            (
                "[[rule]]\nprefix = \"/a\"\nbypass = true\nttl_secs = 5",
                "rule[0].bypass",
            ),
            (
                "[[rule]]\nprefix = \"/a\"\nignore_cache_control = true",
                "rule[0].ignore_cache_control",
            ),
            (
                "[[rule]]\nprefix = \"/a\"\nmax_object_bytes = \"lots\"",
                "rule[0].max_object_bytes",
            ),
        ] {
            let e = rules(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }
}
