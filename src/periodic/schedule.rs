//! Pure: when each periodic task is due. Schedules are evaluated in UTC whatever the host's
//! time zone (docs/decisions/0018-cron-dialect.md): a task's ticks (`CronTask::next_after`,
//! `latest_at`) are searched over `calendar::Utc`, a Unix second, so no date library and
//! no `TZ` is involved.
//!
//! `Plan` is the scheduler's memory: the last tick it handled per task. `due(now)` gives,
//! per task, the latest tick at or before `now` not yet handled, if it is less than
//! `CATCH_UP` old; so at start a tick missed within the last 300 s is produced once (the
//! claim stops a second master sending it again), after a long stall only the latest
//! missed tick is, and older gaps are never filled, as Elastic Beanstalk's daemon does.

use crate::calendar::Utc;
use crate::config::CronTask;

/// A missed tick younger than this is still sent (the daemon's catch-up window; also within
/// SQS FIFO's five-minute deduplication interval, so a FIFO catch-up cannot double).
pub const CATCH_UP: i64 = 300;

/// A tick as Elastic Beanstalk writes `beanstalk.sqsd.scheduled_time`:
/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn scheduled_time(tick: i64) -> String {
    let (y, mo, d, h, mi, s) = Utc(tick).parts();
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// One message to send: task `task` (an index into the table) at `tick` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub task: usize,
    pub tick: i64,
}

/// The last tick handled per task.
#[derive(Debug, Clone)]
pub struct Plan {
    last: Vec<Option<i64>>,
}

impl Plan {
    pub fn new(tasks: usize) -> Plan {
        Plan {
            last: vec![None; tasks],
        }
    }

    /// What is due at `now` (Unix seconds), each task's latest unhandled tick younger than
    /// `CATCH_UP`, now counted as handled. In tick order, then table order.
    pub fn due(&mut self, tasks: &[CronTask], now: i64) -> Vec<Due> {
        let mut due = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let Some(tick) = task.latest_at(now) else {
                continue;
            };
            if now - tick < CATCH_UP && self.last[i].is_none_or(|l| tick > l) {
                self.last[i] = Some(tick);
                due.push(Due { task: i, tick });
            }
        }
        due.sort_by_key(|d| (d.tick, d.task));
        due
    }

    /// When to look again: the soonest tick of any task after `now`; None if none fires
    /// again.
    pub fn next_wake(&self, tasks: &[CronTask], now: i64) -> Option<i64> {
        tasks.iter().filter_map(|t| t.next_after(now)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, schedule: &str, seconds: bool) -> CronTask {
        CronTask::new(name, "/", schedule, seconds).unwrap()
    }

    /// 2026-11-29 17:00:00 UTC, a Sunday.
    const T0: i64 = 1_795_971_600;

    #[test]
    fn ticks_read_as_elastic_beanstalk_writes_them() {
        assert_eq!(scheduled_time(T0), "2026-11-29 17:00:00 UTC");
        assert_eq!(scheduled_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(scheduled_time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn ticks_are_utc_whatever_the_host_zone() {
        // Nothing on this path reads the process's zone (`TZ`, /etc/localtime): the
        // calendar is computed from Unix seconds, so 23:00 is 23:00 UTC on every host.
        let t = task("nightly", "0 23 * * *", false);
        assert_eq!(
            scheduled_time(t.next_after(T0).unwrap()),
            "2026-11-29 23:00:00 UTC"
        );
        assert_eq!(
            scheduled_time(t.latest_at(T0).unwrap()),
            "2026-11-28 23:00:00 UTC"
        );
    }

    #[test]
    fn the_next_tick_is_strictly_after_now() {
        let t = task("m", "*/15 * * * *", false);
        assert_eq!(t.next_after(T0), Some(T0 + 900));
        assert_eq!(t.next_after(T0 - 1), Some(T0));
        assert_eq!(t.latest_at(T0), Some(T0));
        let s = task("s", "*/5 * * * * *", true);
        assert_eq!(s.next_after(T0 + 2), Some(T0 + 5));
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next_tick() {
        let t = task("never", "0 0 30 2 *", false);
        assert_eq!(t.next_after(T0), None);
        assert_eq!(t.latest_at(T0), None);
        let mut plan = Plan::new(1);
        assert!(plan.due(std::slice::from_ref(&t), T0).is_empty());
        assert_eq!(plan.next_wake(&[t], T0), None);
    }

    #[test]
    fn the_due_set_holds_every_task_of_the_tick_once() {
        let tasks = [
            task("hourly", "0 * * * *", false),
            task("quarter", "*/15 * * * *", false),
            task("nightly", "0 23 * * *", false),
        ];
        let mut plan = Plan::new(3);
        // At start, T0 itself is due for the first two (a tick at "now" is not missed).
        let due = plan.due(&tasks, T0);
        assert_eq!(due, [Due { task: 0, tick: T0 }, Due { task: 1, tick: T0 }]);
        assert!(plan.due(&tasks, T0).is_empty(), "handled once");
        assert!(plan.due(&tasks, T0 + 10).is_empty());
        assert_eq!(plan.next_wake(&tasks, T0 + 10), Some(T0 + 900));
        assert_eq!(
            plan.due(&tasks, T0 + 900),
            [Due {
                task: 1,
                tick: T0 + 900
            }]
        );
        // 23:00 is six hours away; the wake is the soonest of all.
        assert_eq!(
            plan.next_wake(&tasks, T0 + 3 * 3600 - 1),
            Some(T0 + 3 * 3600)
        );
    }

    #[test]
    fn at_start_a_tick_missed_within_300_s_is_caught_up_once() {
        let tasks = [task("hourly", "0 * * * *", false)];
        let mut plan = Plan::new(1);
        assert_eq!(plan.due(&tasks, T0 + 299), [Due { task: 0, tick: T0 }]);
        assert!(plan.due(&tasks, T0 + 299).is_empty());
        // 300 s or more: too late, never filled.
        assert!(Plan::new(1).due(&tasks, T0 + 300).is_empty());
        assert!(Plan::new(1).due(&tasks, T0 + 1800).is_empty());
    }

    #[test]
    fn after_a_stall_only_the_latest_missed_tick_is_sent() {
        let tasks = [task("s", "*/5 * * * * *", true)];
        let mut plan = Plan::new(1);
        assert_eq!(plan.due(&tasks, T0), [Due { task: 0, tick: T0 }]);
        // Asleep for a minute (a suspended host): one message, for the latest tick.
        assert_eq!(
            plan.due(&tasks, T0 + 62),
            [Due {
                task: 0,
                tick: T0 + 60
            }]
        );
        // A clock set back never repeats a handled tick.
        assert!(plan.due(&tasks, T0 + 30).is_empty());
    }
}
