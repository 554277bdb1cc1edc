//! The `tracing` events a test's own code logs, recorded as text.

use std::sync::{Arc, Mutex};

/// Records the `tracing` events of this thread while it lives, each as
/// `LEVEL field=value …`: a test sees what was logged without depending on
/// how a binary formats logs. (Under a current-thread runtime the tasks the
/// test starts log on its thread too.)
pub struct LogRecorder {
    lines: Arc<Mutex<Vec<String>>>,
    _default: tracing::subscriber::DefaultGuard,
}

impl LogRecorder {
    /// Starts recording this thread's events.
    pub fn start() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = Recorder(Arc::clone(&lines));
        LogRecorder {
            lines,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The lines recorded so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

struct Recorder(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", f.name(), v));
            }
        }
        let mut text = Text(format!("{} ", event.metadata().level()));
        event.record(&mut text);
        if let Ok(mut lines) = self.0.lock() {
            lines.push(text.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
