//! systemd's notification protocol (`Type=notify`), through the `sd-notify` crate.
//!
//! Without `NOTIFY_SOCKET` every call does nothing. What is sent, and when, is the
//! master's business (`master::observing`); this only words the datagrams and remembers
//! the watchdog's period.

use sd_notify::NotifyState;
use std::time::Duration;

/// Where the master's notifications go.
#[derive(Debug)]
pub struct Notifier {
    /// Half `WATCHDOG_USEC`, as systemd advises; None: no watchdog asked for.
    pub watchdog_period: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog_period: sd_notify::watchdog_enabled().map(|d| d / 2),
        }
    }

    /// Queues open, consumers running.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    /// A drain started; the supervisor's stop timeout is extended by `extend` (the rest of
    /// `shutdown-timeout` and a margin).
    pub fn stopping(&self, extend: Duration) {
        send(&[NotifyState::Stopping, extend_timeout(extend)]);
    }

    /// The drain goes on: `extend` from now.
    pub fn extend(&self, extend: Duration) {
        send(&[extend_timeout(extend)]);
    }

    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }
}

fn extend_timeout(d: Duration) -> NotifyState<'static> {
    NotifyState::ExtendTimeoutUsec(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify systemd");
    }
}
