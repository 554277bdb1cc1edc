//! The configuration reference (docs/configuration.md), rendered from the
//! settings' declaration: what `herdguard serve --print-config-reference`
//! prints, and what a test holds the file to.

use std::fmt::Write as _;

use super::declare::Row;
use super::settings::ROWS;

/// The command that writes docs/configuration.md.
pub(crate) const REGENERATE: &str =
    "cargo run -q -p herdguard-cli -- serve --print-config-reference > docs/configuration.md";

/// Every setting of `herdguard serve` as a Markdown table: setting, flag,
/// environment variable, file key, default, reload class, meaning.
pub fn config_reference() -> String {
    let mut text = format!(
        "# Configuration reference\n\n\
         Every setting of `herdguard serve`. Each is a flag, an environment variable and a key \
         of the TOML file named by `--config`; a flag wins over its variable, which wins over \
         the file, which wins over the default. An invalid value is one line naming the setting \
         and exit code 2.\n\n\
         **Reload**: on SIGHUP the file is read again and validated as at start. A `live` setting \
         is in force for the next request and the next connection; a `restart` one keeps its \
         running value, and the reload names it in a `WARN` event (docs/sidecar.md, \"Reload: \
         SIGHUP\").\n\n\
         This file is generated from the settings' declaration \
         (`crates/herdguard-proxy/src/config/settings.rs`): do not edit it, run\n\n\
         ```sh\n{REGENERATE}\n```\n\n\
         | setting | flag | environment | file key | default | reload | meaning |\n\
         |---|---|---|---|---|---|---|\n\
         | `config` | `--config` | `HERDGUARD_CONFIG` | — | none | — | The TOML file with any \
         of the settings below (read again on SIGHUP). |\n"
    );
    for row in ROWS.iter().filter(|row| !row.hidden) {
        line(&mut text, row);
    }
    text
}

/// One setting's line of the table.
fn line(text: &mut String, row: &Row) {
    let (flag, variable) = if row.flag {
        (
            format!("`--{}`", row.flag_name()),
            format!("`{}`", row.variable()),
        )
    } else {
        ("—".to_string(), "—".to_string())
    };
    let key = if row.name == "rule" {
        "`[[rule]]`".to_string()
    } else {
        format!("`{}`", row.name)
    };
    let default = match row.default_text() {
        "required" | "none" => row.default_text().to_string(),
        text if row.default.starts_with('"') || text.chars().all(|c| c.is_ascii_digit()) => {
            format!("`{text}`")
        }
        text => text.to_string(),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "| `{}` | {flag} | {variable} | {key} | {default} | {} | {} |",
        row.name,
        row.reload,
        row.meaning_text().replace('|', "\\|"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_configuration_md_is_what_the_declaration_renders() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == config_reference(),
            "docs/configuration.md differs from the settings' declaration; regenerate it:\n{REGENERATE}"
        );
    }

    #[test]
    fn every_setting_has_its_line_and_its_variable() {
        let text = config_reference();
        for row in ROWS.iter().filter(|row| !row.hidden) {
            assert!(
                text.contains(&format!("| `{}` |", row.name)),
                "{}",
                row.name
            );
            assert!(!row.meaning.is_empty(), "{} has no documentation", row.name);
        }
        let token = ROWS.iter().find(|r| r.name == "purge_token").unwrap();
        assert_eq!(token.variable(), "HERDGUARD_PURGE_TOKEN");
        assert_eq!(token.flag_name(), "purge-token");
    }
}
