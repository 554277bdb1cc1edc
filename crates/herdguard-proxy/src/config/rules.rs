//! The `[[rule]]` tables of the TOML file, as written, validated into
//! [`PathRules`] (each error names the rule's index and field).

use std::time::Duration;

use globset::GlobBuilder;
use serde::Deserialize;

use super::error::ConfigError;
use crate::handle::path_rules::{PathRule, PathRules};

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
        .map(PathRules::new)
}

fn resolve_one(i: usize, rule: RuleFile, max_object: u64) -> Result<PathRule, ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError {
        field: format!("rule[{i}].{field}"),
        reason,
    };
    let matched = match (rule.prefix, rule.glob) {
        (Some(p), None) if p.starts_with('/') => PathRule::prefix(p),
        (None, Some(g)) if g.starts_with('/') => {
            let glob = GlobBuilder::new(&g)
                // `*` stays within a path segment; `**` crosses them.
                .literal_separator(true)
                .build()
                .map_err(|e| invalid("glob", format!("{g:?}: {}", e.kind())))?;
            PathRule::glob(g, glob.compile_matcher())
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
    let mut resolved = matched;
    resolved.ttl = ttl;
    resolved.bypass = rule.bypass;
    resolved.ignore_cache_control = rule.ignore_cache_control;
    resolved.ignore_set_cookie = rule.ignore_set_cookie;
    resolved.max_object_bytes = max_object_bytes;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

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
