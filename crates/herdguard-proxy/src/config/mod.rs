//! Configuration: flags and `HERDGUARD_*` environment variables (clap) over a
//! TOML file (`--config`) over defaults, resolved into validated
//! [`Settings`](settings::Settings); what each layer reads of them; and the
//! reload on SIGHUP.
//!
//! # One declaration per setting
//!
//! Every setting is one row of the `settings!` table in `settings.rs`: its
//! name, what it reads, its type, parser, reload class (`live` or `restart`),
//! default and documentation. From that row come the flag and its variable
//! (`ServeArgs`), the TOML key (`FileConfig`), the precedence (flag, then
//! variable, then file, then default), the value in `Settings`, what a reload
//! does with it, the flag's help and its line in docs/configuration.md.
//!
//! Adding a setting is one row there, plus its use (most often a line in
//! `tuning.rs` or `serve`), plus regenerating the reference with
//! `herdguard serve --print-config-reference` (a test fails until
//! docs/configuration.md matches).
//!
//! # Layout
//!
//! - `settings`: the table — every setting, declared once.
//! - `declare`: the `settings!` macro the table is written in.
//! - `parse`: the rows' parsers (and the rules between settings they check).
//! - `resolve`: the file read, flags over it, deprecated names.
//! - `rules`: the `[[rule]]` tables of the file.
//! - `error`: [`ConfigError`](error::ConfigError), naming the setting.
//! - `secret`: [`Secret`](secret::Secret), a value `Debug` never shows.
//! - `tuning`: the settings each layer reads, which a reload may replace.
//! - `reload`: SIGHUP — what changes live, what needs a restart.
//! - `reference`: docs/configuration.md, rendered from the table.

pub(crate) mod declare;
pub(crate) mod error;
pub(crate) mod parse;
pub(crate) mod reference;
pub(crate) mod reload;
pub(crate) mod resolve;
pub(crate) mod rules;
pub(crate) mod secret;
pub(crate) mod settings;
pub(crate) mod tuning;
