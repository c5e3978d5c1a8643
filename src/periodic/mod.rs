//! Periodic tasks: the scheduler that turns a queue's `cron.yaml` into one message per
//! due task and tick, however many chore masters serve the queue.
//!
//! (Skeleton: filled in by the periodic-task work.)
