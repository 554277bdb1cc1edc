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

use globset::GlobMatcher;

/// How a rule picks its paths.
#[derive(Clone, Debug)]
enum PathMatch {
    /// Paths starting with this text.
    Prefix(String),
    /// Paths matching a glob: `*` and `?` within a segment, `**` across them,
    /// `{a,b}` alternatives, `[...]` classes.
    Glob(GlobMatcher),
}

/// Rules are the same when written the same (a reload compares them).
impl PartialEq for PathMatch {
    fn eq(&self, other: &PathMatch) -> bool {
        match (self, other) {
            (PathMatch::Prefix(a), PathMatch::Prefix(b)) => a == b,
            (PathMatch::Glob(a), PathMatch::Glob(b)) => a.glob() == b.glob(),
            _ => false,
        }
    }
}

/// One `[[rule]]`, validated.
#[derive(Clone, Debug, PartialEq)]
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
    /// A rule for paths starting with `prefix`, with no setting yet.
    pub(crate) fn prefix(prefix: String) -> PathRule {
        PathRule::new(prefix.clone(), PathMatch::Prefix(prefix))
    }

    /// A rule for paths matching `glob` (written `pattern`), with no setting yet.
    pub(crate) fn glob(pattern: String, glob: GlobMatcher) -> PathRule {
        PathRule::new(pattern, PathMatch::Glob(glob))
    }

    fn new(pattern: String, matcher: PathMatch) -> PathRule {
        PathRule {
            pattern,
            matcher,
            ttl: None,
            bypass: false,
            ignore_cache_control: false,
            ignore_set_cookie: false,
            max_object_bytes: None,
        }
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Glob(g) => g.is_match(path),
        }
    }
}

/// The rules of one configuration, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathRules(Vec<PathRule>);

impl PathRules {
    /// The rules, in the order they are tried.
    pub(crate) fn new(rules: Vec<PathRule>) -> PathRules {
        PathRules(rules)
    }

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

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
