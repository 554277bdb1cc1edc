//! Why a demo run stopped: the caller's input (exit code 2) or the run itself (exit code 1).

/// Why a demo run stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A flag out of range, a combination that makes no sense, an unreachable Redis:
    /// something the caller can fix. The binary exits with code 2.
    #[error("{0}")]
    BadInput(String),
    /// The run itself failed (a worker process died, the runtime could not start).
    /// The binary exits with code 1.
    #[error("{0}")]
    Runtime(String),
    /// Ctrl-C: the run stopped early (worker processes and the `--fleet` Redis
    /// stopped with it). The binary exits with code 130, as shells do.
    #[error("interrupted")]
    Interrupted,
}

impl DemoError {
    /// The process exit code for this error: 2 for bad input, 1 for a failed run.
    pub fn exit_code(&self) -> i32 {
        match self {
            DemoError::BadInput(_) => 2,
            DemoError::Runtime(_) => 1,
            DemoError::Interrupted => 130,
        }
    }
}

pub(crate) fn bad(message: impl Into<String>) -> DemoError {
    DemoError::BadInput(message.into())
}

pub(crate) fn runtime(message: impl Into<String>) -> DemoError {
    DemoError::Runtime(message.into())
}
