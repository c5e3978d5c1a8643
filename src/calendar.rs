//! The proleptic Gregorian calendar in UTC, pure and by hand (no date crate): day numbers
//! to dates and back, for the timestamps HTTP handlers send and periodic tasks schedule;
//! and `Utc`, an instant in whole Unix seconds, which croner searches over when a
//! schedule is evaluated, so that no `TZ` is ever involved.

use croner::errors::CronError;
use croner::{CivilDate, CivilDateTime, CivilTime, CronDateTime, Resolution, Weekday};
use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (the inverse of `days_from_civil`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_and_dates_round_trip_across_leap_days_and_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn utc_knows_its_weekdays_and_converts_by_whole_seconds() {
        // 2026-11-29 17:00:00 UTC, a Sunday.
        let t0 = 1_795_971_600;
        assert_eq!(Utc(t0).civil_weekday(), Weekday::Sunday);
        assert_eq!(Utc(0).civil_weekday(), Weekday::Thursday);
        assert_eq!(Utc(t0).parts(), (2026, 11, 29, 17, 0, 0));
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(Utc::from_system(t), Utc(1));
        assert_eq!(
            Utc(t0).to_system(),
            UNIX_EPOCH + std::time::Duration::from_secs(t0 as u64)
        );
        assert_eq!(
            Utc::from_system(UNIX_EPOCH - std::time::Duration::from_millis(500)),
            Utc(-1)
        );
    }
}
