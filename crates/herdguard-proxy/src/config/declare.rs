//! The machinery behind the one declaration of the settings (`settings.rs`):
//! a `settings!` table row becomes a flag, an environment variable, a file
//! key, a default, a parser, a reload class and a line of the reference, so
//! that none of them can be forgotten or disagree with another.
//!
//! A row reads
//!
//! ```text
//! /// What it is (the flag's help and the reference's meaning).
//! name: kind => Type = parser, reload, default;
//! ```
//!
//! - `name`: the file key; the flag is `--name` with dashes, the variable
//!   `HERDGUARD_NAME`; `Settings::name` holds the value.
//! - `kind`: what is read — `text`, `list` (comma-separated, or a TOML list),
//!   `size` (with a unit, or a TOML number of bytes), `path`, `u32` / `u64` /
//!   `usize`, `switch` (a flag that can only turn it on; the file may too),
//!   `rules` (the `[[rule]]` tables; file only).
//! - `Type`: what [`Settings`](super::settings::Settings) holds.
//! - `parser`: `fn(field, input) -> Result<Type, ConfigError>`, or a closure
//!   that may read the settings declared above it (they are resolved in order).
//! - `reload`: `live` (a SIGHUP puts it in force) or `restart` (it keeps its
//!   running value until a restart, and a reload names it).
//! - `default`: `default(LITERAL)` (written as an operator would), `unset`
//!   (`Type` is then wrapped in `Option`), `required("an example")`, or
//!   `computed(EXPRESSION, "what the reference says")`.
//! - then, optionally, `, secret` (the variable's value never shown in the
//!   help) or `, hidden` (a deprecated name: left out of the help and the
//!   reference).

use std::fmt;

/// Whether a reload puts a setting in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    /// In force for the next request and the next connection after SIGHUP.
    Live,
    /// Keeps its running value until a restart; a reload names it.
    Restart,
}

impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reload::Live => "live",
            Reload::Restart => "restart",
        })
    }
}

/// One setting as the reference and the help show it.
#[derive(Debug)]
pub(crate) struct Row {
    /// The file key (and the flag and variable, spelled their way).
    pub name: &'static str,
    /// Whether it has a flag and a variable (else it is in the file only).
    pub flag: bool,
    /// The default as written (`required`, `none`, a value or a phrase).
    pub default: &'static str,
    pub reload: Reload,
    /// Its documentation, a line per element.
    pub meaning: &'static [&'static str],
    /// A deprecated name, left out of the help and the reference.
    pub hidden: bool,
    /// Its variable's value is never shown in the help.
    pub secret: bool,
}

impl Row {
    /// `--name-with-dashes`.
    pub(crate) fn flag_name(&self) -> String {
        self.name.replace('_', "-")
    }

    /// `HERDGUARD_NAME`.
    pub(crate) fn variable(&self) -> String {
        format!("HERDGUARD_{}", self.name.to_ascii_uppercase())
    }

    /// The default as a reader wants it: a value without its quotes, `none`
    /// for an empty one.
    pub(crate) fn default_text(&self) -> &'static str {
        match self.default.trim_matches('"') {
            "" => "none",
            text => text,
        }
    }

    /// Its documentation as one paragraph.
    pub(crate) fn meaning_text(&self) -> String {
        let lines: Vec<&str> = self.meaning.iter().map(|l| l.trim()).collect();
        lines.join(" ")
    }

    /// The flag's help: the meaning and the default.
    pub(crate) fn help(&self) -> String {
        match self.default {
            "required" => format!("{} (required)", self.meaning_text()),
            _ => format!("{} [default: {}]", self.meaning_text(), self.default_text()),
        }
    }
}

/// Declares every setting once (see the module docs for a row's syntax) and
/// generates from the rows: `ServeArgs` (the flags and variables, for clap),
/// `FileConfig` (the TOML file), `Inputs` (both merged: flag > variable >
/// file), `Settings` (the values, resolved in row order, then the `derived`
/// ones), the reload's comparisons, and `ROWS` (the reference).
macro_rules! settings {
    (
        flags {
            $(
                $(#[doc = $doc:literal])*
                $name:ident : $kind:ident => $ty:ty = $parse:expr, $class:ident,
                    $dkind:ident $(($($darg:tt)*))? $(, $mark:ident)* ;
            )*
        }
        file_only {
            $(
                $(#[doc = $fdoc:literal])*
                $fname:ident : $fkind:ident => $fty:ty = $fparse:expr, $fclass:ident,
                    $fdkind:ident $(($($fdarg:tt)*))? ;
            )*
        }
        derived {
            $(
                $(#[doc = $ddoc:literal])*
                $dname:ident : $dty:ty = $dexpr:expr ;
            )*
        }
    ) => {
        $crate::config::declare::serve_args! {
            $( $name $kind [$($doc)*] )*
        }
        $crate::config::declare::inputs! {
            $( $name $kind flag )*
            $( $fname $fkind file )*
        }
        $crate::config::declare::values! {
            rows {
                $( $name [$ty] $kind [$parse] $class [$dkind $(($($darg)*))?] [$($doc)*] )*
                $( $fname [$fty] $fkind [$fparse] $fclass [$fdkind $(($($fdarg)*))?] [$($fdoc)*] )*
            }
            derived {
                $( $dname [$dty] [$dexpr] [$($ddoc)*] )*
            }
        }
        /// Every setting, in declaration order, as the reference shows it.
        pub(crate) const ROWS: &[$crate::config::declare::Row] = &[
            $(
                $crate::config::declare::Row {
                    name: stringify!($name),
                    flag: true,
                    default: $crate::config::declare::default_text!($dkind $(($($darg)*))?),
                    reload: $crate::config::declare::reload!($class),
                    meaning: &[$($doc),*],
                    hidden: $crate::config::declare::marked!(hidden: $($mark)*),
                    secret: $crate::config::declare::marked!(secret: $($mark)*),
                },
            )*
            $(
                $crate::config::declare::Row {
                    name: stringify!($fname),
                    flag: false,
                    default: $crate::config::declare::default_text!($fdkind $(($($fdarg)*))?),
                    reload: $crate::config::declare::reload!($fclass),
                    meaning: &[$($fdoc),*],
                    hidden: false,
                    secret: false,
                },
            )*
        ];
    };
}

/// `ServeArgs` and its clap impls: a field and a flag per row with one.
macro_rules! serve_args {
    ($( $name:ident $kind:ident [$($doc:literal)*] )*) => {
        /// `herdguard serve` flags. Every flag also reads its `HERDGUARD_*`
        /// variable, and every setting (the flag without its leading `--`,
        /// dashes as underscores) may be set in the TOML file; a flag or
        /// variable wins over the file (docs/configuration.md lists them).
        #[derive(Clone, Debug, Default)]
        pub struct ServeArgs {
            /// TOML file with any of these settings.
            pub config: Option<std::path::PathBuf>,
            $(
                $(#[doc = $doc])*
                pub $name: $crate::config::declare::arg_ty!($kind),
            )*
        }

        impl clap::FromArgMatches for ServeArgs {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(ServeArgs {
                    config: matches.get_one::<std::path::PathBuf>("config").cloned(),
                    $(
                        $name: $crate::config::declare::from_matches!(
                            $kind, matches, stringify!($name)
                        ),
                    )*
                })
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                let given = Self::from_arg_matches(matches)?;
                if given.config.is_some() {
                    self.config = given.config;
                }
                $(
                    $crate::config::declare::update!($kind, self.$name, given.$name);
                )*
                Ok(())
            }
        }

        impl clap::Args for ServeArgs {
            fn augment_args(command: clap::Command) -> clap::Command {
                let config = clap::Arg::new("config")
                    .long("config")
                    .env("HERDGUARD_CONFIG")
                    .value_name("CONFIG")
                    .help("TOML file with any of these settings")
                    .value_parser(clap::value_parser!(std::path::PathBuf))
                    .action(clap::ArgAction::Set);
                let mut command = command.arg(config);
                for row in ROWS {
                    let arg = match row.name {
                        $(
                            stringify!($name) => {
                                $crate::config::declare::arg_kind!($kind, stringify!($name))
                            }
                        )*
                        _ => continue,
                    };
                    command = command.arg($crate::config::declare::arg_for(row, arg));
                }
                command
            }

            fn augment_args_for_update(command: clap::Command) -> clap::Command {
                Self::augment_args(command)
            }
        }
    };
}

/// `FileConfig` (the TOML file) and `Inputs` (flag over variable over file):
/// a field per row; a `file` row has no flag.
macro_rules! inputs {
    ($( $name:ident $kind:ident $source:ident )*) => {
        /// The TOML file: every setting, by its name.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct FileConfig {
            $(
                #[serde(default)]
                $name: Option<$crate::config::declare::file_ty!($kind)>,
            )*
        }

        /// Every setting as given, flag over variable over file (`None`: not given).
        #[derive(Clone, Default)]
        pub(crate) struct Inputs {
            $( pub(crate) $name: Option<$crate::config::declare::input_ty!($kind)>, )*
        }

        impl std::fmt::Debug for Inputs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // A secret is among them: shown through `Settings` only.
                f.debug_struct("Inputs").finish_non_exhaustive()
            }
        }

        impl Inputs {
            /// The flags and variables over the file.
            pub(crate) fn merge(args: &ServeArgs, file: FileConfig) -> Inputs {
                Inputs {
                    $(
                        $name: $crate::config::declare::merge!(
                            $source $kind, args, $name, file.$name
                        ),
                    )*
                }
            }

            /// Takes the inputs of the settings named in `names` from `from`.
            pub(crate) fn keep(&mut self, from: &Inputs, names: &[&str]) {
                $(
                    if names.contains(&stringify!($name)) {
                        self.$name = from.$name.clone();
                    }
                )*
            }
        }
    };
}

/// `Settings`: a field per row, resolved in row order, then the derived
/// values; and what a reload compares and keeps.
macro_rules! values {
    (
        rows {
            $( $name:ident [$ty:ty] $kind:ident [$parse:expr] $class:ident
                [$($default:tt)*] [$($doc:literal)*] )*
        }
        derived {
            $( $dname:ident [$dty:ty] [$dexpr:expr] [$($ddoc:literal)*] )*
        }
    ) => {
        /// Validated settings of one proxy, one field per setting (named as in
        /// the file), then the values derived from several of them.
        #[derive(Clone, Debug)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                pub $name: $crate::config::declare::value_ty!($ty, $($default)*),
            )*
            $(
                $(#[doc = $ddoc])*
                pub $dname: $dty,
            )*
            /// What they were resolved from (what a reload works on).
            pub(crate) inputs: Inputs,
        }

        impl Settings {
            /// Parses and checks every input, in row order (a row may read
            /// the settings above it), then works out the derived values.
            #[allow(clippy::redundant_closure_call)]
            pub(crate) fn resolve(
                inputs: Inputs,
            ) -> Result<Settings, $crate::config::error::ConfigError> {
                $(
                    let $name: $crate::config::declare::value_ty!($ty, $($default)*) =
                        $crate::config::declare::resolve_row!(
                            stringify!($name), inputs.$name.clone(), $parse, $kind,
                            $($default)*
                        );
                )*
                $( let $dname: $dty = $dexpr; )*
                Ok(Settings {
                    $( $name, )*
                    $( $dname, )*
                    inputs,
                })
            }

            /// The names of the settings reloaded as `reload` whose values
            /// differ from `other`'s, in row order.
            pub(crate) fn changed(
                &self,
                other: &Settings,
                reload: $crate::config::declare::Reload,
            ) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    if $crate::config::declare::reload!($class) == reload
                        && self.$name != other.$name
                    {
                        names.push(stringify!($name));
                    }
                )*
                names
            }

            /// Takes from `running` the values of every restart-only setting
            /// and of the derived ones (worked out once, at start).
            pub(crate) fn keep_restart(&mut self, running: &Settings) {
                use $crate::config::declare::Reload;
                $(
                    if $crate::config::declare::reload!($class) == Reload::Restart {
                        self.$name = running.$name.clone();
                    }
                )*
                $( self.$dname = running.$dname.clone(); )*
            }
        }
    };
}

/// A flag's arg: its name, variable, value name, help and the row's marks.
pub(crate) fn arg_for(row: &Row, arg: clap::Arg) -> clap::Arg {
    let arg = if arg.get_action().takes_values() {
        arg.value_name(row.name.to_ascii_uppercase())
    } else {
        arg
    };
    arg.long(row.flag_name())
        .env(row.variable())
        .help(row.help())
        .hide(row.hidden)
        .hide_env_values(row.secret)
}

/// The clap arg `id` of one kind.
macro_rules! arg_kind {
    (switch, $id:expr) => {
        clap::Arg::new($id)
            .action(clap::ArgAction::SetTrue)
            .value_parser(clap::value_parser!(bool))
    };
    ($kind:ident, $id:expr) => {
        clap::Arg::new($id)
            .action(clap::ArgAction::Set)
            .value_parser(clap::value_parser!($crate::config::declare::input_ty!(
                $kind
            )))
    };
}

/// What a flag of `kind` holds in `ServeArgs`.
macro_rules! arg_ty {
    (switch) => { bool };
    ($kind:ident) => { Option<$crate::config::declare::input_ty!($kind)> };
}

/// What an input of `kind` is, once read from a flag, a variable or the file.
macro_rules! input_ty {
    (text) => { String };
    (list) => { String };
    (size) => { String };
    (path) => { std::path::PathBuf };
    (switch) => { bool };
    (u32) => { u32 };
    (u64) => { u64 };
    (usize) => { usize };
    (rules) => { Vec<$crate::config::rules::RuleFile> };
}

/// How the file writes an input of `kind` (turned into `input_ty!` by `Into`).
macro_rules! file_ty {
    (list) => {
        $crate::config::parse::StringOrList
    };
    (size) => {
        $crate::config::parse::SizeValue
    };
    ($kind:ident) => {
        $crate::config::declare::input_ty!($kind)
    };
}

/// What `Settings` holds of a row: `Option` of its type when it defaults to unset.
macro_rules! value_ty {
    ($ty:ty, unset) => { Option<$ty> };
    ($ty:ty, $dkind:ident $($default:tt)*) => { $ty };
}

/// A flag's value out of clap's matches.
macro_rules! from_matches {
    (switch, $matches:expr, $id:expr) => {
        $matches.get_flag($id)
    };
    ($kind:ident, $matches:expr, $id:expr) => {
        $matches
            .get_one::<$crate::config::declare::input_ty!($kind)>($id)
            .cloned()
    };
}

/// A flag given on the update's command line replaces the value.
macro_rules! update {
    (switch, $field:expr, $given:expr) => {
        $field = $field || $given
    };
    ($kind:ident, $field:expr, $given:expr) => {
        if $given.is_some() {
            $field = $given;
        }
    };
}

/// A flag (or its variable) over the file; a switch set by either is on; a
/// `file` row is read from the file alone.
macro_rules! merge {
    (file $kind:ident, $args:expr, $name:ident, $file:expr) => {
        $file.map(Into::into)
    };
    (flag switch, $args:expr, $name:ident, $file:expr) => {
        if $args.$name {
            Some(true)
        } else {
            $file
        }
    };
    (flag $kind:ident, $args:expr, $name:ident, $file:expr) => {
        $args.$name.clone().or($file.map(Into::into))
    };
}

/// One setting's value: its input parsed, else its default.
macro_rules! resolve_row {
    ($field:expr, $input:expr, $parse:expr, $kind:ident, required($example:literal)) => {
        match $input {
            Some(input) => ($parse)($field, input)?,
            None => {
                return Err($crate::config::error::invalid(
                    $field,
                    concat!("required (e.g. ", $example, ")"),
                ))
            }
        }
    };
    ($field:expr, $input:expr, $parse:expr, $kind:ident, unset) => {
        match $input {
            Some(input) => Some(($parse)($field, input)?),
            None => None,
        }
    };
    ($field:expr, $input:expr, $parse:expr, $kind:ident, default($default:literal)) => {
        ($parse)(
            $field,
            $input.unwrap_or_else(|| $crate::config::declare::input_default!($kind, $default)),
        )?
    };
    ($field:expr, $input:expr, $parse:expr, $kind:ident, computed($default:expr, $text:literal)) => {
        match $input {
            Some(input) => ($parse)($field, input)?,
            None => $default,
        }
    };
}

/// A default literal as an input of `kind`.
macro_rules! input_default {
    (text, $default:literal) => {
        String::from($default)
    };
    (list, $default:literal) => {
        String::from($default)
    };
    (size, $default:literal) => {
        String::from($default)
    };
    ($kind:ident, $default:literal) => {
        $default
    };
}

/// A default as the reference writes it.
macro_rules! default_text {
    (required($example:literal)) => {
        "required"
    };
    (unset) => {
        "none"
    };
    (default($default:literal)) => {
        stringify!($default)
    };
    (computed($default:expr, $text:literal)) => {
        $text
    };
}

/// A reload class by its name in the table.
macro_rules! reload {
    (live) => {
        $crate::config::declare::Reload::Live
    };
    (restart) => {
        $crate::config::declare::Reload::Restart
    };
}

/// Whether a row's marks include `mark` (`hidden`: a deprecated name;
/// `secret`: its variable's value never shown).
macro_rules! marked {
    ($mark:ident:) => { false };
    (hidden: hidden $($rest:ident)*) => { true };
    (secret: secret $($rest:ident)*) => { true };
    ($mark:ident: $other:ident $($rest:ident)*) => {
        $crate::config::declare::marked!($mark: $($rest)*)
    };
}

pub(crate) use {
    arg_kind, arg_ty, default_text, file_ty, from_matches, input_default, input_ty, inputs, marked,
    merge, reload, resolve_row, serve_args, settings, update, value_ty, values,
};
