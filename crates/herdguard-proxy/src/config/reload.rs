//! Reload while serving (SIGHUP): the configuration is resolved again — flags
//! and environment over the re-read file, validated as at start — and what can
//! change live is put in force for the next request and the next connection;
//! connections and requests in flight carry on untouched. What only a restart
//! can change (listeners, the origin, Redis, the memory budget, ...: the
//! settings declared `restart`) keeps its running value and is named in the
//! log; what depends on it (the object sizes within the memory budget) is
//! worked out again from the running value. An invalid file changes nothing.

use std::sync::{Arc, Mutex};

use super::declare::Reload;
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
    pub fn reload(&self, next: Settings) -> Result<Reloaded, ConfigError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, done) = reconcile(next, &current)?;
        if done.applied.contains(&"log_level") {
            if let Some(log) = &self.log {
                log.apply(next.log_level.as_deref())?;
            }
        }
        self.proxy.retune(tuning::handler(&next));
        self.connections.store(Arc::new(tuning::connections(&next)));
        *current = next;
        Ok(done)
    }

    /// [`Reloader::reload`], logged: one event saying what changed, and a
    /// warning naming what needs a restart.
    pub fn reload_logged(&self, next: Result<Settings, ConfigError>) {
        let next = next.map(|s| {
            let patterns = s.rule.patterns();
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

/// `next` with the running value of every setting only a restart changes, and
/// what depends on those worked out again; with the names of the restart-only
/// settings the file changed and of the live ones that change now.
fn reconcile(next: Settings, current: &Settings) -> Result<(Settings, Reloaded), ConfigError> {
    let need_restart = next.changed(current, Reload::Restart);
    let mut inputs = next.inputs;
    inputs.keep(&current.inputs, &need_restart);
    let mut next = Settings::resolve(inputs)?;
    // A file read again (a CA) may differ under the same name: the running one stays.
    next.keep_restart(current);
    let applied = next.changed(current, Reload::Live);
    Ok((
        next,
        Reloaded {
            applied,
            need_restart,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::settings::ServeArgs;

    fn settings(extra: &str) -> Settings {
        file(&format!(
            "listen = \"127.0.0.1:1\"\norigin = \"http://127.0.0.1:2\"\n{extra}"
        ))
    }

    /// The settings of a file holding `text`.
    fn file(text: &str) -> Settings {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hg-reload-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
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
        let next = settings(
            "threads = 3\nmax_memory = \"1GiB\"\nidle_timeout_ms = 5\n\
             [[rule]]\nprefix = \"/a\"\nbypass = true\n",
        );
        let (next, done) = reconcile(next, &current).unwrap();
        // max_entries follows max_memory when not set.
        assert_eq!(
            done.need_restart,
            vec!["max_memory", "max_entries", "threads"]
        );
        assert_eq!(next.threads, current.threads);
        assert_eq!(next.max_memory, current.max_memory);
        assert_eq!(next.max_entries, current.max_entries);
        assert_eq!(done.applied, vec!["idle_timeout_ms", "rule"]);
        assert_eq!(next.idle_timeout_ms, Duration::from_millis(5));
        // Object sizes follow the running budget, not the file's new one.
        let bigger = settings(
            "max_memory = \"4GiB\"\nmax_body_bytes = 1073741824\n\
             [[rule]]\nprefix = \"/a\"\nmax_object_bytes = \"1GiB\"\n",
        );
        let (bigger, _) = reconcile(bigger, &current).unwrap();
        let cap = (current.max_memory / 100 * 10) as usize;
        assert_eq!(bigger.max_body_bytes, cap);
        let rule = bigger.rule.for_path("/a").unwrap();
        assert_eq!(rule.max_object_bytes, Some(cap));
        // Nothing changed, nothing named.
        let (_, done) = reconcile(settings(""), &current).unwrap();
        assert_eq!(done, Reloaded::default());
    }

    #[test]
    fn a_new_purge_token_needs_a_restart() {
        let current = settings("purge_token = \"0123456789abcdef\"\n");
        let next = settings("purge_token = \"fedcba9876543210\"\n");
        let (next, done) = reconcile(next, &current).unwrap();
        assert_eq!(done.need_restart, vec!["purge_token"]);
        assert_eq!(next.purge_token.unwrap().0, "0123456789abcdef");
    }

    #[test]
    fn every_restart_setting_keeps_its_running_value() {
        // One file changing every setting a restart needs (and no live one),
        // each to a valid value of its own.
        let dir = std::env::temp_dir().join(format!("hg-reload-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
        let current = settings("");
        let next = file(&format!(
            "listen = \"127.0.0.1:3\"\norigin = \"https://127.0.0.1:4\"\n\
             origin_ca = {cert:?}\nredis = \"redis://127.0.0.1:5\"\n\
             redis_lock_servers = \"redis://127.0.0.1:6\"\nadmin = \"127.0.0.1:7\"\n\
             redis_ca = {cert:?}\nredis_cert = {cert:?}\nredis_key = {key:?}\n\
             purge_token = \"0123456789abcdef\"\nmax_memory = \"1GiB\"\nmax_entries = 9\n\
             max_header_bytes = 9000\nredis_max_value_bytes = 9\norigin_timeout_ms = 9\n\
             origin_connect_timeout_ms = 9\nmax_origin_requests = 9\norigin_queue_timeout_ms = 9\n\
             hit_for_miss_secs = 9\nredis_prefix = \"x:\"\n\
             redis_op_timeout_ms = 9\ncache_namespace = \"n\"\ncache_key_query = \"sorted\"\n\
             cache_key = \"host,path\"\nkeep_client_host = true\nforward_host = true\nthreads = 9\nmax_connections = 9\n\
             admin_max_connections = 9\nadmin_max_event_streams = 9\nadmin_auth = \"all\"\n\
             tls_cert = {cert:?}\ntls_key = {key:?}\n\
             h2_max_concurrent_streams = 9\n"
        ));
        let (kept, done) = reconcile(next, &current).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let restart: Vec<&str> = super::super::settings::ROWS
            .iter()
            .filter(|row| {
                row.reload == Reload::Restart && !row.hidden && row.name != "redis_cluster"
            })
            .map(|row| row.name)
            .collect();
        assert_eq!(done.need_restart, restart);
        assert!(done.applied.is_empty(), "{:?}", done.applied);
        assert!(kept.changed(&current, Reload::Restart).is_empty());
        assert!(kept.tls.is_none());
    }
}
