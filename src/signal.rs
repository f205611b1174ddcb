//! A value that tasks wait on, as with `tokio::sync::watch`, but whose waiters wake in the
//! order they began to wait: a watch spreads its waiters over eight lists picked at random by
//! tokio's own generator, which no seed controls, so a simulated run could not be replayed.

use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// A shared value and the tasks waiting for it to change.
#[derive(Debug, Default)]
pub struct Signal<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Copy + PartialEq> Signal<T> {
    /// A signal holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    /// The value now.
    pub fn get(&self) -> T {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the value and wakes every waiter; returns the value it replaced.
    pub fn replace(&self, value: T) -> T {
        let old = std::mem::replace(
            &mut *self.value.lock().unwrap_or_else(PoisonError::into_inner),
            value,
        );
        if old != value {
            self.changed.notify_waiters();
        }
        old
    }

    /// Waits until the value satisfies `ready`, and returns it.
    pub async fn wait_for(&self, ready: impl Fn(T) -> bool) -> T {
        loop {
            // Registered before the check, so that a change right after it wakes this task.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let value = self.get();
            if ready(value) {
                return value;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_once_the_value_is_ready() {
        let signal = Arc::new(Signal::new(5_usize));
        let waiter = tokio::spawn({
            let signal = Arc::clone(&signal);
            async move { signal.wait_for(|value| value <= 2).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(signal.replace(3), 5);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished(), "3 is not ready");
        signal.replace(2);
        assert_eq!(waiter.await.expect("the waiter ends"), 2);
    }
}
