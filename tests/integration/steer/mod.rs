//! Steering a running master: SIGHUP reloads, consumer threads that come back after a
//! panic, and logs an operator can follow (handler output as log events, one line per
//! settled message).

mod logs;
mod reload;
