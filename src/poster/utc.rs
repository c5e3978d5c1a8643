//! UTC calendar arithmetic for the HTTP handler, pure and by hand (no date crate): the
//! `YYYY-MM-DDTHH:MM:SSZ` timestamps the request headers carry, the periodic tasks'
//! `YYYY-MM-DD HH:MM:SS UTC` turned into that form, and `Retry-After` read as seconds or
//! as an HTTP date.

use crate::calendar::{civil_from_days, days_from_civil};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (fractions dropped), in a fixed buffer so that a header
/// costs no formatting allocation. None before 1970 or after 9999.
pub fn iso(t: SystemTime) -> Option<[u8; 20]> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let (year, month, day) = civil_from_days((secs / DAY) as i64);
    if year > 9999 {
        return None;
    }
    let tod = secs % DAY;
    let mut out = *b"0000-00-00T00:00:00Z";
    put(&mut out[0..4], year as u64);
    put(&mut out[5..7], u64::from(month));
    put(&mut out[8..10], u64::from(day));
    put(&mut out[11..13], tod / 3600);
    put(&mut out[14..16], tod / 60 % 60);
    put(&mut out[17..19], tod % 60);
    Some(out)
}

/// Right-aligned zero-padded decimal digits of `n` into `slot`.
fn put(slot: &mut [u8], mut n: u64) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A periodic task's tick as the scheduler writes it (`2026-11-29 17:00:00 UTC`), in the
/// header form (`2026-11-29T17:00:00Z`). None when it is not in that form.
pub fn scheduled_iso(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shape = b"dddd-dd-dd dd:dd:dd UTC";
    let fits = b.len() == shape.len()
        && b.iter().zip(shape).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        });
    fits.then(|| format!("{}T{}Z", &s[..10], &s[11..19]))
}

/// A `Retry-After` value: delta-seconds, or an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994
/// 08:49:37 GMT`) measured from `now` (a date already past means zero).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (the only HTTP date form a sender may generate).
fn http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = s.split(' ');
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?.strip_suffix(',')?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let number = |t: &str| -> Option<u32> {
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let month = MONTHS.iter().position(|&m| m == month)? as u32 + 1;
    let (day, year) = (number(day)?, number(year)?);
    let mut hms = time.split(':').map(|t| (t.len() == 2).then(|| number(t))?);
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(i64::from(year), month, day)).ok()?;
    let secs = days * DAY + u64::from(h * 3600 + m * 60 + sec);
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn iso_str(secs: u64) -> String {
        String::from_utf8(iso(at(secs)).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn timestamps_are_iso_utc_to_the_second() {
        assert_eq!(iso_str(0), "1970-01-01T00:00:00Z");
        // The daemon capture's First-Received-At.
        assert_eq!(iso_str(1_692_107_873), "2023-08-15T13:57:53Z");
        // Milliseconds are dropped, not rounded.
        let t = at(1_692_107_873) + Duration::from_millis(999);
        assert_eq!(&iso(t).unwrap(), b"2023-08-15T13:57:53Z");
        assert_eq!(iso_str(951_782_400 - 1), "2000-02-28T23:59:59Z");
        assert_eq!(iso_str(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(iso(at(253_402_300_800)), None);
        assert_eq!(iso(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn leap_days_are_dates() {
        // 2000 is a leap year (divisible by 400), 2100 is not, 2024 is.
        assert_eq!(iso_str(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_str(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(iso_str(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(
            civil_from_days(days_from_civil(2100, 3, 1) - 1),
            (2100, 2, 28)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2024, 3, 1) - 1),
            (2024, 2, 29)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for d in (-800_000..800_000).step_by(97) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn scheduled_times_become_iso() {
        assert_eq!(
            scheduled_iso("2019-11-14 00:47:00 UTC").as_deref(),
            Some("2019-11-14T00:47:00Z")
        );
        assert_eq!(scheduled_iso("2019-11-14T00:47:00Z"), None);
        assert_eq!(scheduled_iso("2019-11-14 00:47:00 GMT"), None);
        assert_eq!(scheduled_iso("2019-11-14 0:47:00 UTC"), None);
        assert_eq!(scheduled_iso(""), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Thu, 29 Feb 2024 12:00:00 GMT", now),
            Some(at(1_709_208_000).duration_since(now).unwrap())
        );
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad}");
        }
    }
}
