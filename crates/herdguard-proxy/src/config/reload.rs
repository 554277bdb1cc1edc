//! Reload while serving (SIGHUP): the configuration is resolved again — flags
//! and environment over the re-read file, validated as at start — and what can
//! change live is put in force for the next request and the next connection;
//! connections and requests in flight carry on untouched. What only a restart
//! can change (listeners, the origin, Redis, the memory budget, ...) keeps its
//! running value and is named in the log. An invalid file changes nothing.

use std::sync::{Arc, Mutex};

use super::error::ConfigError;
use super::settings::Settings;
use super::tuning;
use crate::handle::proxy::Proxy;
use crate::listen::acceptor::LiveConnections;

/// Puts a log filter (`--log-level` syntax) in force; `Err` says why it is not one.
pub type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The binary's log filter, which a configuration file may set (`log_level`).
pub struct LogControl {
    /// Puts a filter in force.
    pub set: SetFilter,
    /// What set the filter at start when it was not the file (`--log-level`,
    /// `RUST_LOG`): it then wins over the file, at start and on reload.
    pub pinned_by: Option<&'static str>,
    /// The filter when neither the file nor `pinned_by` gives one.
    pub default: String,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("pinned_by", &self.pinned_by)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// Applies the file's `log_level` (or the default when it has none), unless pinned.
    pub(crate) fn apply(&self, file_level: Option<&str>) -> Result<(), ConfigError> {
        if self.pinned_by.is_some() {
            return Ok(());
        }
        (self.set)(file_level.unwrap_or(&self.default)).map_err(|reason| ConfigError {
            field: "log_level".into(),
            reason,
        })
    }
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings that changed and are in force now.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub need_restart: Vec<&'static str>,
}

/// Applies re-read configurations to a running proxy ([`Server::reloader`](crate::Server::reloader)).
pub struct Reloader {
    proxy: Arc<Proxy>,
    connections: LiveConnections,
    current: Mutex<Settings>,
    log: Option<LogControl>,
}

impl Reloader {
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        connections: LiveConnections,
        current: Settings,
        log: Option<LogControl>,
    ) -> Self {
        Reloader {
            proxy,
            connections,
            current: Mutex::new(current),
            log,
        }
    }

    /// Puts what can change live of `next` in force; the rest keeps its running
    /// value. `Err` (nothing changed) when `next` is invalid beside the running
    /// settings or its log filter does not parse.
    pub fn reload(&self, mut next: Settings) -> Result<Reloaded, ConfigError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let need_restart = keep_restart_fields(&mut next, &current);
        bound_objects(&mut next);
        let applied = live_changes(&next, &current);
        if applied.contains(&"log_level") {
            if let Some(log) = &self.log {
                log.apply(next.log_level.as_deref())?;
            }
        }
        self.proxy.retune(tuning::handler(&next));
        self.connections.store(Arc::new(tuning::connections(&next)));
        *current = next;
        Ok(Reloaded {
            applied,
            need_restart,
        })
    }

    /// [`Reloader::reload`], logged: one event saying what changed, and a
    /// warning naming what needs a restart.
    pub fn reload_logged(&self, next: Result<Settings, ConfigError>) {
        let next = next.map(|s| {
            let patterns = s.path_rules.patterns();
            (s, patterns)
        });
        match next.and_then(|(s, patterns)| Ok((self.reload(s)?, patterns))) {
            Ok((done, rules)) => {
                tracing::info!(
                    target: "herdguard::serve",
                    applied = %list(&done.applied),
                    rules = %rules,
                    "configuration reloaded"
                );
                if !done.need_restart.is_empty() {
                    tracing::warn!(
                        target: "herdguard::serve",
                        settings = %list(&done.need_restart),
                        "configuration reloaded: these changes need a restart and are not in force"
                    );
                }
            }
            Err(e) => tracing::error!(
                target: "herdguard::serve",
                error = %e,
                "configuration not reloaded: the running one stays"
            ),
        }
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(",")
    }
}

/// Whether a field differs (`Debug` renders every field of `Settings` but the
/// token, whose `Debug` hides it).
macro_rules! differs {
    ($a:expr, $b:expr, $f:ident) => {
        format!("{:?}", $a.$f) != format!("{:?}", $b.$f)
    };
}

/// Gives `next` the running value of every setting only a restart changes;
/// returns the names of those that differed.
fn keep_restart_fields(next: &mut Settings, current: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($f:ident => $name:literal),* $(,)?) => {$(
            if differs!(next, current, $f) {
                changed.push($name);
                next.$f = current.$f.clone();
            }
        )*};
    }
    keep!(
        listen => "listen",
        origin => "origin",
        origin_trust => "origin_ca",
        redis => "redis",
        redis_cluster => "redis_cluster",
        redis_lock_servers => "redis_lock_servers",
        admin => "admin",
        max_entries => "max_entries",
        max_memory => "max_memory",
        max_header_bytes => "max_header_bytes",
        redis_max_value_bytes => "redis_max_value_bytes",
        origin_timeout => "origin_timeout_ms",
        origin_connect_timeout => "origin_connect_timeout_ms",
        hit_for_miss => "hit_for_miss_secs",
        redis_prefix => "redis_prefix",
        redis_op_timeout => "redis_op_timeout_ms",
        cache_namespace => "cache_namespace",
        cache_key => "cache_key",
        threads => "threads",
        max_connections => "max_connections",
        admin_max_connections => "admin_max_connections",
        keep_client_host => "keep_client_host",
        tls => "tls_cert/tls_key",
        h2_max_concurrent_streams => "h2_max_concurrent_streams",
    );
    if next.purge_token.as_ref().map(|t| &t.0) != current.purge_token.as_ref().map(|t| &t.0) {
        changed.push("purge_token");
        next.purge_token = current.purge_token.clone();
    }
    changed
}

/// Bounds the object sizes, which were derived from the file's `max_memory`,
/// by the running one (which `next` holds once restart fields are kept).
fn bound_objects(next: &mut Settings) {
    let cap = usize::try_from(next.max_memory / 100 * next.max_object_percent)
        .unwrap_or(usize::MAX)
        .max(1);
    next.max_body_bytes = next.max_body_bytes.min(cap);
    next.path_rules.cap_objects(cap);
}

/// The names of the live settings that differ.
fn live_changes(next: &Settings, current: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($f:ident => $name:literal),* $(,)?) => {$(
            if differs!(next, current, $f) {
                changed.push($name);
            }
        )*};
    }
    compare!(
        cache_targets => "cache_target",
        heuristic_max => "heuristic_max_secs",
        stale_if_error => "stale_if_error_secs",
        request_cache_control => "request_cache_control",
        trusted_proxies => "trusted_proxies",
        max_body_bytes => "max_body_bytes/max_object_percent",
        max_request_body_bytes => "max_request_body_bytes",
        connection_limits => "header_read_timeout_ms/idle_timeout_ms/write_timeout_ms",
        body_read_timeout => "body_read_timeout_ms",
        access_log => "access_log",
        path_rules => "rule",
        log_level => "log_level",
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::ServeArgs;

    fn settings(extra: &str) -> Settings {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hg-reload-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            format!("listen = \"127.0.0.1:1\"\norigin = \"http://127.0.0.1:2\"\n{extra}"),
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        s
    }

    #[test]
    fn restart_fields_keep_their_running_value_and_are_named() {
        let current = settings("");
        let mut next = settings(
            "threads = 3\nmax_memory = \"1GiB\"\nidle_timeout_ms = 5\n\
             [[rule]]\nprefix = \"/a\"\nbypass = true\n",
        );
        let restart = keep_restart_fields(&mut next, &current);
        // Object sizes follow the running budget, not the file's new one.
        let mut bigger = settings(
            "max_memory = \"4GiB\"\nmax_body_bytes = 1073741824\n\
             [[rule]]\nprefix = \"/a\"\nmax_object_bytes = \"1GiB\"\n",
        );
        keep_restart_fields(&mut bigger, &current);
        bound_objects(&mut bigger);
        let cap = (current.max_memory / 100 * 10) as usize;
        assert_eq!(bigger.max_body_bytes, cap);
        let rule = bigger.path_rules.for_path("/a").unwrap();
        assert_eq!(rule.max_object_bytes, Some(cap));
        // max_entries follows max_memory when not set.
        assert_eq!(restart, vec!["max_entries", "max_memory", "threads"]);
        assert_eq!(next.threads, current.threads);
        assert_eq!(next.max_memory, current.max_memory);
        let live = live_changes(&next, &current);
        assert_eq!(
            live,
            vec![
                "header_read_timeout_ms/idle_timeout_ms/write_timeout_ms",
                "rule"
            ]
        );
        // Nothing changed, nothing named.
        let mut same = settings("");
        assert!(keep_restart_fields(&mut same, &current).is_empty());
        assert!(live_changes(&same, &current).is_empty());
    }

    #[test]
    fn a_new_purge_token_needs_a_restart() {
        let current = settings("purge_token = \"0123456789abcdef\"\n");
        let mut next = settings("purge_token = \"fedcba9876543210\"\n");
        assert_eq!(
            keep_restart_fields(&mut next, &current),
            vec!["purge_token"]
        );
        assert_eq!(next.purge_token.unwrap().0, "0123456789abcdef");
    }
}
