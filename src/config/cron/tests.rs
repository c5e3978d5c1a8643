//! `cron.yaml` loading: a good file, each kind of mistake and its message, and the dialect.

use super::*;
use crate::calendar::Utc;
use crate::periodic::schedule::scheduled_time;

/// `text` written to a file of its own, then loaded (its mistakes one per line).
fn load_text(text: &str, seconds: bool) -> Result<CronTable, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("chore-cron-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("cron-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).unwrap();
    let out = load(&path, seconds);
    let _ = std::fs::remove_file(&path);
    out.map_err(|mistakes| mistakes.join("\n"))
}

fn error(text: &str) -> String {
    load_text(text, false).expect_err("a mistake")
}

/// 2026-11-29 17:00:00 UTC, a Sunday.
const T0: i64 = 1_795_971_600;

fn ticks(schedule: &str, seconds: bool, n: usize) -> Vec<String> {
    let task = CronTask::new("t", "/", schedule, seconds).unwrap();
    let mut t = T0;
    (0..n)
        .map(|_| {
            t = task.next_after(t).unwrap();
            scheduled_time(t)
        })
        .collect()
}

#[test]
fn a_good_file_gives_its_tasks_in_order_with_their_lines() {
    let table = load_text(
        "version: 1\n\
         cron:\n\
         \x20 - name: \"PeriodicTaskJob\"\n\
         \x20   url: \"/periodic_tasks\"\n\
         \x20   schedule: \"* * * * *\"\n\
         \x20   description: ignored, as Elastic Beanstalk ignores it\n\
         \x20 - name: nightly\n\
         \x20   url: /reports?kind=nightly\n\
         \x20   schedule: 0 23 * * *\n",
        false,
    )
    .unwrap();
    assert!(table.path.to_string_lossy().ends_with(".yaml"));
    let t: Vec<(&str, &str, &str, Option<usize>)> = table
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.url.as_str(), t.schedule.as_str(), t.line))
        .collect();
    assert_eq!(
        t,
        [
            ("PeriodicTaskJob", "/periodic_tasks", "* * * * *", Some(3)),
            ("nightly", "/reports?kind=nightly", "0 23 * * *", Some(7)),
        ]
    );
    assert_eq!(
        scheduled_time(table.tasks[1].next_after(T0).unwrap()),
        "2026-11-29 23:00:00 UTC"
    );
}

#[test]
fn an_empty_task_list_is_allowed() {
    assert!(
        load_text("version: 1\ncron: []\n", false)
            .unwrap()
            .tasks
            .is_empty()
    );
    assert!(
        load_text("version: 1\ncron:\n", false)
            .unwrap()
            .tasks
            .is_empty()
    );
}

#[test]
fn the_version_is_required_and_must_be_1() {
    let e = error("cron: []\n");
    assert!(e.contains(".yaml: missing `version: 1`"), "{e}");
    let e = error("version: 2\ncron: []\n");
    assert!(e.contains("line 1: `version` must be 1, not 2"), "{e}");
    assert!(load_text("version: \"1\"\ncron: []\n", false).is_ok());
    assert!(load_text("version: 1.0\ncron: []\n", false).is_ok());
}

#[test]
fn the_file_must_be_a_mapping_with_a_task_list() {
    assert!(error("").contains("the file is empty"));
    assert!(error("- a\n- b\n").contains("expected a mapping with `version: 1` and `cron:`"));
    assert!(error("version: 1\n").contains("missing `cron:`"));
    let e = error("version: 1\ncron: every day\n");
    assert!(
        e.contains("line 2: `cron` must be a list of entries"),
        "{e}"
    );
    let e = error("version: 1\ncron:\n  - just a string\n");
    assert!(e.contains("entry 1 (line 3): expected a mapping"), "{e}");
}

#[test]
fn a_yaml_syntax_error_names_its_line_and_the_quoting_rule() {
    // An unquoted `*` starts an alias in YAML.
    let e = error("version: 1\ncron:\n  - name: a\n    url: /\n    schedule: */5 * * * *\n");
    assert!(e.contains("line 5: not valid YAML"), "{e}");
    assert!(e.contains("must be quoted"), "{e}");
}

#[test]
fn missing_or_mistyped_keys_name_the_entry() {
    let e = error("version: 1\ncron:\n  - name: a\n    url: /\n    shedule: \"* * * * *\"\n");
    assert!(
        e.contains("entry 1 `a` (line 3): missing `schedule` (found `shedule`: a typo?)"),
        "{e}"
    );
    let e = error("version: 1\ncron:\n  - url: /\n    schedule: \"* * * * *\"\n");
    assert!(e.contains("entry 1 (line 3): missing `name`"), "{e}");
    let e = error("version: 1\ncron:\n  - name: [a]\n    url: /\n    schedule: \"* * * * *\"\n");
    assert!(
        e.contains("`name` must be a string, not a list or mapping"),
        "{e}"
    );
    let e = error("version: 1\ncron:\n  - name: 42\n    url: /\n    schedule: \"* * * * *\"\n");
    assert!(
        e.contains("`name` must be a string, not 42 (quote it)"),
        "{e}"
    );
    let e = error("version: 1\ncron:\n  - name: \" \"\n    url: /\n    schedule: \"* * * * *\"\n");
    assert!(e.contains("entry 1 (line 3): `name` is empty"), "{e}");
    let e = error("version: 1\ncron:\n  - name:\n    url: /\n    schedule: \"* * * * *\"\n");
    assert!(
        e.contains("entry 1 (line 3): `name` must be a string, not empty"),
        "{e}"
    );
}

#[test]
fn a_url_must_be_a_plain_path() {
    let e = error(
        "version: 1\ncron:\n  - name: a\n    url: http://localhost/x\n    schedule: \"* * * * *\"\n",
    );
    assert!(
        e.contains("entry 1 `a` (line 4): `url` must be a path starting with `/`"),
        "{e}"
    );
    let e = error("version: 1\ncron:\n  - name: a\n    url: /a b\n    schedule: \"* * * * *\"\n");
    assert!(e.contains("`url` `/a b` has a space"), "{e}");
}

#[test]
fn a_duplicate_name_names_both_entries() {
    let e = error(
        "version: 1\ncron:\n  - name: a\n    url: /\n    schedule: \"* * * * *\"\n  \
         - name: a\n    url: /x\n    schedule: \"0 * * * *\"\n",
    );
    assert!(
        e.contains("entry 2 `a` (line 6): the name `a` is already used by entry 1 (line 3)"),
        "{e}"
    );
}

#[test]
fn every_mistake_is_reported_on_a_line_of_its_own_naming_the_file() {
    let e = error(
        "version: 3\ncron:\n  - name: a\n    url: x\n    schedule: \"61 * * * *\"\n  \
         - name: b\n    url: /\n",
    );
    let parts: Vec<&str> = e.lines().collect();
    assert_eq!(parts.len(), 4, "{e}");
    assert!(parts.iter().all(|p| p.contains("cron-")), "{e}");
    assert!(parts[0].contains("`version` must be 1, not 3"), "{e}");
    assert!(parts[1].contains("entry 1 `a` (line 4): `url`"), "{e}");
    assert!(
        parts[2].contains(
            "entry 1 `a` (line 5): schedule `61 * * * *`: 61 is out of range for the minute (0 to 59)"
        ),
        "{e}"
    );
    assert!(
        parts[3].contains("entry 2 `b` (line 6): missing `schedule`"),
        "{e}"
    );
}

#[test]
fn six_fields_are_refused_without_seconds_with_the_reason() {
    let e = error("version: 1\ncron:\n  - name: a\n    url: /\n    schedule: \"*/30 * * * * *\"\n");
    assert!(e.contains("Elastic Beanstalk ignores the sixth"), "{e}");
    assert!(e.contains("every 30 minutes, not seconds"), "{e}");
    assert!(e.contains("`cron-seconds = true`"), "{e}");
    // With seconds, six fields and the first is seconds.
    assert_eq!(
        ticks("*/30 * * * * *", true, 3),
        [
            "2026-11-29 17:00:30 UTC",
            "2026-11-29 17:01:00 UTC",
            "2026-11-29 17:01:30 UTC"
        ]
    );
    let e = CronTask::new("a", "/", "* * * * *", true).unwrap_err();
    assert!(e.contains("with `cron-seconds = true` it has six"), "{e}");
    assert!(
        CronTask::new("a", "/", "* * * *", false)
            .unwrap_err()
            .contains("needs five")
    );
}

#[test]
fn names_of_months_and_days_read_as_numbers_in_any_case() {
    assert_eq!(
        ticks("0 9 * JAN MON", false, 2),
        ticks("0 9 * 1 1", false, 2)
    );
    assert_eq!(
        ticks("0 9 * jan-mar mon-fri", false, 5),
        ticks("0 9 * 1-3 1-5", false, 5)
    );
    // Sunday is 0 and 7.
    assert_eq!(ticks("0 9 * * 7", false, 2), ticks("0 9 * * SUN", false, 2));
    // A day name in the month field is a mistake, not a number.
    let e = CronTask::new("a", "/", "0 9 * MON *", false).unwrap_err();
    assert!(
        e.contains("`MON` in `MON` is not in Elastic Beanstalk's cron dialect"),
        "{e}"
    );
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_match_either() {
    // Vixie cron: the 13th of any month, or any Friday. From Sunday 2026-11-29:
    // Fri 4 Dec, Fri 11 Dec, Sun 13 Dec, Fri 18 Dec.
    assert_eq!(
        ticks("0 0 13 * FRI", false, 4),
        [
            "2026-12-04 00:00:00 UTC",
            "2026-12-11 00:00:00 UTC",
            "2026-12-13 00:00:00 UTC",
            "2026-12-18 00:00:00 UTC"
        ]
    );
    // One of them `*`: only the other restricts.
    assert_eq!(ticks("0 0 * * FRI", false, 1), ["2026-12-04 00:00:00 UTC"]);
}

#[test]
fn aliases_are_the_daemons() {
    assert_eq!(ticks("@daily", false, 1), ["2026-11-30 00:00:00 UTC"]);
    assert_eq!(ticks("@HOURLY", false, 1), ["2026-11-29 18:00:00 UTC"]);
    assert_eq!(ticks("@weekly", true, 1), ["2026-12-06 00:00:00 UTC"]);
    let e = CronTask::new("a", "/", "@reboot", false).unwrap_err();
    assert!(e.contains("unknown alias"), "{e}");
}

#[test]
fn croners_extensions_beyond_the_dialect_are_refused() {
    for (schedule, what) in [
        ("0 0 L * *", "`L`"),
        ("0 0 15W * *", "`W`"),
        ("0 0 * * 5#2", "`#`"),
        ("0 0 ? * MON", "`?`"),
        ("0 0 * * +MON", "`+`"),
        ("0 0 1 1 * 2030", "six fields"),
    ] {
        let e = CronTask::new("a", "/", schedule, false).unwrap_err();
        assert!(e.contains(what), "{schedule}: {e}");
    }
}

#[test]
fn values_out_of_range_name_their_field() {
    for (schedule, seconds, what) in [
        (
            "0 24 * * *",
            false,
            "24 is out of range for the hour (0 to 23)",
        ),
        (
            "0 0 0 * *",
            false,
            "0 is out of range for the day of the month (1 to 31)",
        ),
        (
            "0 0 * 1-13 *",
            false,
            "13 is out of range for the month (1 to 12)",
        ),
        (
            "0 0 * * 8",
            false,
            "8 is out of range for the day of the week (0 to 7)",
        ),
        (
            "60 * * * * *",
            true,
            "60 is out of range for the second (0 to 59)",
        ),
    ] {
        let e = CronTask::new("a", "/", schedule, seconds).unwrap_err();
        assert!(e.contains(what), "{schedule}: {e}");
    }
    // Steps are counts, checked by croner.
    assert!(CronTask::new("a", "/", "*/45 * * * *", false).is_ok());
    let e = CronTask::new("a", "/", "*/0 * * * *", false).unwrap_err();
    assert!(
        e.starts_with("schedule `*/0 * * * *` cannot be read: ") && !e.ends_with('.'),
        "{e}"
    );
}

#[test]
fn a_missing_file_names_itself() {
    let e = load(Path::new("/nonexistent/cron.yaml"), false).unwrap_err();
    assert!(
        e[0].starts_with("cannot read /nonexistent/cron.yaml"),
        "{e:?}"
    );
}

#[test]
fn utc_instants_match_croner_directly() {
    let task = CronTask::new("t", "/", "0 17 29 11 *", false).unwrap();
    assert!(task.cron.is_time_matching(&Utc(T0)).unwrap());
    assert!(!task.cron.is_time_matching(&Utc(T0 + 60)).unwrap());
}
