//! Configuration: flags and `HERDGUARD_*` environment variables (clap) over a
//! TOML file (`--config`) over defaults, resolved into validated [`Settings`](settings::Settings);
//! what each layer takes of them; and the reload on SIGHUP.
//!
//! # Layout
//!
//! - `settings`: the flags, the file, the defaults, resolved and validated.
//! - `rules`: the `[[rule]]` tables of the file.
//! - `error`: [`ConfigError`](error::ConfigError), naming the field.
//! - `tuning`: the settings each layer reads, which a reload may replace.
//! - `reload`: SIGHUP — what changes live, what needs a restart.

pub(crate) mod error;
pub(crate) mod reload;
pub(crate) mod rules;
pub(crate) mod settings;
pub(crate) mod tuning;
