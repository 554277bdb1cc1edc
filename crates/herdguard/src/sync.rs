//! The synchronization primitives of the single-flight core, swappable for
//! shuttle's so the model checker can explore every interleaving.
//!
//! Build with `RUSTFLAGS="--cfg herdguard_shuttle"` to get the shuttle versions (a
//! cfg, not a feature, so `--all-features` never swaps them in a normal build).

#[cfg(not(herdguard_shuttle))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

    /// `parking_lot`'s mutex: no poisoning to handle, and a fast uncontended path.
    /// Critical sections here never await, so a blocking mutex is right (an async
    /// mutex would cost a wake-up per waiter for nothing).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
            self.0.lock()
        }
    }
}

#[cfg(herdguard_shuttle)]
mod imp {
    pub(crate) use shuttle::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> shuttle::sync::MutexGuard<'_, T> {
            // A panic while holding this lock is a bug the checker should report,
            // not something to recover from.
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

pub(crate) use imp::*;
