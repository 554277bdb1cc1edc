//! Flags and variables over the `--config` file over defaults: the file read,
//! the inputs merged, deprecated names read into their successors, every
//! setting resolved ([`Settings::resolve`]).

use std::path::Path;

use super::error::{invalid, ConfigError};
use super::settings::{FileConfig, Inputs, ServeArgs, Settings};

impl ServeArgs {
    /// Flags over the `--config` file over defaults, validated.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => read(path)?,
        };
        let mut inputs = Inputs::merge(self, file);
        deprecated_names(&mut inputs)?;
        Settings::resolve(inputs)
    }
}

/// The TOML file at `path`; an unknown key is an error naming it.
fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("config", format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        invalid(
            "config",
            format!("{}: {}", path.display(), e.message().replace('\n', " ")),
        )
    })
}

/// `max_cache_bytes` (bytes) is the deprecated name of `max_memory`: read
/// into it, and refused beside it.
fn deprecated_names(inputs: &mut Inputs) -> Result<(), ConfigError> {
    if let Some(bytes) = inputs.max_cache_bytes {
        if inputs.max_memory.is_some() {
            return Err(invalid(
                "max_cache_bytes",
                "set max_memory only (max_cache_bytes is its deprecated name)",
            ));
        }
        inputs.max_memory = Some(bytes.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;
    use crate::handle::proxy::RequestCacheControl;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            origin: Some("http://127.0.0.1:9".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults_resolve() {
        let s = args().resolve().unwrap();
        assert_eq!(
            s.cache_target,
            vec![HeaderName::from_static("cdn-cache-control")]
        );
    }

    #[test]
    fn max_memory_takes_units_and_bounds_the_largest_object() {
        let s = args().resolve().unwrap();
        assert_eq!(s.max_memory, 256 << 20);
        // 10 % of 256 MiB is above the 16 MiB default.
        assert_eq!(s.max_body_bytes, 16 << 20);
        let mut a = args();
        a.max_memory = Some("64MiB".into());
        let s = a.resolve().unwrap();
        assert_eq!(s.max_memory, 64 << 20);
        assert_eq!(s.max_body_bytes, (64 << 20) / 100 * 10);
        let mut a = args();
        a.max_memory = Some("2 GiB".into());
        a.max_object_percent = Some(1);
        let s = a.resolve().unwrap();
        assert_eq!(s.max_memory, 2 << 30);
        assert_eq!(s.max_body_bytes, 16 << 20);
        for bad in ["", "lots", "-1MiB", "0"] {
            let mut a = args();
            a.max_memory = Some(bad.into());
            assert_eq!(a.resolve().unwrap_err().field, "max_memory", "{bad:?}");
        }
        let mut a = args();
        a.max_object_percent = Some(80);
        assert_eq!(a.resolve().unwrap_err().field, "max_object_percent");
        let mut a = args();
        a.max_memory = Some("1GiB".into());
        a.max_cache_bytes = Some(1 << 30);
        assert_eq!(a.resolve().unwrap_err().field, "max_cache_bytes");
        // The deprecated name alone still works.
        let mut a = args();
        a.max_cache_bytes = Some(1 << 20);
        assert_eq!(a.resolve().unwrap().max_memory, 1 << 20);
    }

    #[test]
    fn errors_name_the_field() {
        let mut a = args();
        a.origin = Some("ftp://x".into());
        assert_eq!(a.resolve().unwrap_err().field, "origin");
        let mut a = args();
        a.origin_timeout_ms = Some(0);
        assert_eq!(a.resolve().unwrap_err().field, "origin_timeout_ms");
        for (field, set) in [
            (
                "trusted_proxies",
                (|a: &mut ServeArgs| a.trusted_proxies = Some("10.0.0.0/8, nope".into()))
                    as fn(&mut ServeArgs),
            ),
            ("request_cache_control", |a| {
                a.request_cache_control = Some("sometimes".into())
            }),
            ("cache_key", |a| a.cache_key = Some("host,query".into())),
            ("cache_key", |a| a.cache_key_query = Some("shuffled".into())),
            ("max_connections", |a| a.max_connections = Some(0)),
            ("header_read_timeout_ms", |a| {
                a.header_read_timeout_ms = Some(0)
            }),
            ("cache_namespace", |a| {
                a.cache_namespace = Some("a b".into())
            }),
            ("redis_cluster", |a| {
                a.redis = Some("redis://127.0.0.1:1".into());
                a.redis_cluster = Some("redis://127.0.0.1:2".into());
            }),
            ("redis_cluster", |a| {
                a.redis_cluster = Some("127.0.0.1:2".into())
            }),
            ("redis_lock_servers", |a| {
                a.redis_lock_servers = Some("redis://127.0.0.1:3".into())
            }),
            ("redis_ca", |a| a.redis_ca = Some("ca.pem".into())),
            ("redis_cert", |a| {
                a.redis = Some("rediss://127.0.0.1:1".into());
                a.redis_key = Some("client.key".into());
            }),
            ("redis_key", |a| {
                a.redis = Some("rediss://127.0.0.1:1".into());
                a.redis_cert = Some("client.pem".into());
            }),
        ] {
            let mut a = args();
            set(&mut a);
            assert_eq!(a.resolve().unwrap_err().field, field);
        }
    }

    #[test]
    fn new_settings_resolve() {
        let mut a = args();
        a.trusted_proxies = Some("10.0.0.0/8, 127.0.0.1".into());
        a.request_cache_control = Some("ignore".into());
        a.cache_key = Some("path,query".into());
        a.cache_key_query = Some("sorted".into());
        let s = a.resolve().unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.request_cache_control, RequestCacheControl::Ignore);
        assert!(!s.cache_key.host);
        // Different origins, different namespaces; the same origin, the same one.
        let other = ServeArgs {
            origin: Some("http://127.0.0.1:10".into()),
            ..args()
        };
        assert_ne!(other.resolve().unwrap().cache_namespace, s.cache_namespace);
        assert_eq!(args().resolve().unwrap().cache_namespace, s.cache_namespace);
    }

    #[test]
    fn file_is_read_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("hg-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\norigin = \"http://127.0.0.1:2\"\nmax_entries = 7\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:3".into()),
            ..ServeArgs::default()
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.listen.port(), 3);
        assert_eq!(s.max_entries, 7);
        std::fs::write(&path, "max_entrys = 7\n").unwrap();
        let e = a.resolve().unwrap_err();
        assert!(e.to_string().contains("max_entrys"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_flag_has_its_name_and_variable_and_reaches_its_setting() {
        use clap::{Args, FromArgMatches};
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        for row in super::super::settings::ROWS.iter().filter(|r| r.flag) {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == row.name)
                .unwrap_or_else(|| panic!("no flag for {}", row.name));
            assert_eq!(arg.get_long(), Some(row.flag_name().as_str()));
            let variable = row.variable();
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&variable)));
        }
        // Given on the command line, each kind of flag reaches its setting.
        let matches = command
            .try_get_matches_from([
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--origin",
                "http://127.0.0.1:2",
                "--max-connections",
                "7",
                "--max-memory",
                "64MiB",
                "--trusted-proxies",
                "10.0.0.0/8",
                "--access-log",
            ])
            .unwrap();
        let s = ServeArgs::from_arg_matches(&matches)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(s.max_connections, 7);
        assert_eq!(s.max_memory, 64 << 20);
        assert_eq!(s.trusted_proxies.len(), 1);
        assert!(s.access_log);
        assert!(!s.keep_client_host);
    }
}
