//! An invalid setting: the one error of configuration, naming its field
//! (`herdguard serve` prints it on one line and exits with code 2).

/// An invalid setting, named by its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The setting (flag name without dashes).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}
