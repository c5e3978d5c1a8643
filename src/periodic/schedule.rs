//! Pure: when each periodic task is due. Schedules are evaluated in UTC whatever the host's
//! time zone (docs/decisions/0018-cron-dialect.md): croner searches over `Utc`, a Unix
//! second, with the calendar worked out here, so no date library and no `TZ` is involved.
//!
//! `Plan` is the scheduler's memory: the last tick it handled per task. `due(now)` gives,
//! per task, the latest tick at or before `now` not yet handled, if it is less than
//! `CATCH_UP` old; so at start a tick missed within the last 300 s is produced once (the
//! claim stops a second master sending it again), after a long stall only the latest
//! missed tick is, and older gaps are never filled, as Elastic Beanstalk's daemon does.

use crate::calendar::{civil_from_days, days_from_civil};
use crate::config::CronTask;
use croner::errors::CronError;
use croner::{CivilDate, CivilDateTime, CivilTime, CronDateTime, Resolution, Weekday};
use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// A missed tick younger than this is still sent (the daemon's catch-up window; also within
/// SQS FIFO's five-minute deduplication interval, so a FIFO catch-up cannot double).
pub const CATCH_UP: i64 = 300;

const DAY: i64 = 86_400;

/// A UTC instant, in whole Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc(pub i64);

impl Utc {
    /// Year, month, day, hour, minute, second.
    pub fn parts(self) -> (i64, u32, u32, u32, u32, u32) {
        let (y, m, d) = civil_from_days(self.0.div_euclid(DAY));
        let s = self.0.rem_euclid(DAY);
        (
            y,
            m,
            d,
            (s / 3600) as u32,
            (s % 3600 / 60) as u32,
            (s % 60) as u32,
        )
    }

    pub fn from_system(t: SystemTime) -> Utc {
        Utc(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            // Before 1970, rounded down.
            Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
        })
    }

    pub fn to_system(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + std::time::Duration::from_secs(self.0 as u64)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.0.unsigned_abs())
        }
    }
}

/// A tick as Elastic Beanstalk writes `beanstalk.sqsd.scheduled_time`:
/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn scheduled_time(tick: i64) -> String {
    let (y, mo, d, h, mi, s) = Utc(tick).parts();
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

impl CronDateTime for Utc {
    fn to_civil(&self) -> CivilDateTime {
        let (y, mo, d, h, mi, s) = self.parts();
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(y as i32, mo, d),
            CivilTime::from_parts_unchecked(h, mi, s),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        // 1970-01-01 was a Thursday.
        Weekday::from_days_from_sunday((self.0.div_euclid(DAY) + 4).rem_euclid(7) as u32)
    }

    fn resolve_civil(&self, c: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        // UTC has no gaps and no folds.
        let days = days_from_civil(i64::from(c.year()), c.month(), c.day());
        let secs = i64::from(c.hour() * 3600 + c.minute() * 60 + c.second());
        Ok(Resolution::Single(Utc(days * DAY + secs)))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0.checked_add(seconds).map(Utc)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// The first tick of `task` strictly after `t`; None if it never fires again.
pub fn next_after(task: &CronTask, t: i64) -> Option<i64> {
    task.cron
        .find_next_occurrence(&Utc(t), false)
        .ok()
        .map(|u| u.0)
}

/// The latest tick of `task` at or before `t`.
pub fn latest_at(task: &CronTask, t: i64) -> Option<i64> {
    task.cron
        .find_previous_occurrence(&Utc(t), true)
        .ok()
        .map(|u| u.0)
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
            let Some(tick) = latest_at(task, now) else {
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
        tasks.iter().filter_map(|t| next_after(t, now)).min()
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
    fn the_calendar_round_trips_and_knows_its_epochs() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(scheduled_time(T0), "2026-11-29 17:00:00 UTC");
        assert_eq!(scheduled_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(scheduled_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(Utc(T0).civil_weekday(), Weekday::Sunday);
        assert_eq!(Utc(0).civil_weekday(), Weekday::Thursday);
    }

    #[test]
    fn system_time_converts_by_whole_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(Utc::from_system(t), Utc(1));
        assert_eq!(
            Utc(T0).to_system(),
            UNIX_EPOCH + std::time::Duration::from_secs(T0 as u64)
        );
        assert_eq!(
            Utc::from_system(UNIX_EPOCH - std::time::Duration::from_millis(500)),
            Utc(-1)
        );
    }

    #[test]
    fn ticks_are_utc_whatever_the_host_zone() {
        // Nothing on this path reads the process's zone (`TZ`, /etc/localtime): the
        // calendar is computed from Unix seconds, so 23:00 is 23:00 UTC on every host.
        let t = task("nightly", "0 23 * * *", false);
        assert_eq!(
            scheduled_time(next_after(&t, T0).unwrap()),
            "2026-11-29 23:00:00 UTC"
        );
        assert_eq!(
            scheduled_time(latest_at(&t, T0).unwrap()),
            "2026-11-28 23:00:00 UTC"
        );
    }

    #[test]
    fn the_next_tick_is_strictly_after_now() {
        let t = task("m", "*/15 * * * *", false);
        assert_eq!(next_after(&t, T0), Some(T0 + 900));
        assert_eq!(next_after(&t, T0 - 1), Some(T0));
        assert_eq!(latest_at(&t, T0), Some(T0));
        let s = task("s", "*/5 * * * * *", true);
        assert_eq!(next_after(&s, T0 + 2), Some(T0 + 5));
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next_tick() {
        let t = task("never", "0 0 30 2 *", false);
        assert_eq!(next_after(&t, T0), None);
        assert_eq!(latest_at(&t, T0), None);
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
