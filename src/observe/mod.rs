//! Observing a running master from outside: Prometheus metrics (`metrics`, served by
//! `exporter`), the consumption liveness rule (`liveness`, pure) and systemd's
//! notification protocol (`notify`); `slots` bounds the connections a listener serves.
//!
//! Metric calls go through the `metrics` facade: without `metrics-listen` no recorder is
//! installed and every handle is a no-op, so the data path pays nothing when metrics are
//! off. Handles are registered once per queue (`metrics::QueueMetrics`), never per message.

pub mod exporter;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod slots;
