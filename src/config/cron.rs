//! An Elastic Beanstalk `cron.yaml`, named by a queue's `cron-file`: its periodic tasks,
//! each checked when the configuration is loaded, so a mistake stops the start and names
//! the entry (docs/decisions/0018-cron-dialect.md).
//!
//! The file is `version: 1` and `cron:`, a list of entries with `name` (unique), `url` (a
//! path, joined to the handler's host and port) and `schedule` (five-field cron, UTC);
//! other keys are ignored, as Elastic Beanstalk ignores them. Schedules are parsed here,
//! once, so nothing re-parses them at run time. Every mistake is reported, each naming the
//! entry (its position, name and line), in one line for the caller to wrap.

use super::suggest;
use crate::calendar::Utc;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use saphyr::{LoadableYamlNode, MarkedYaml};
use std::path::{Path, PathBuf};

/// The tasks of one `cron.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct CronTable {
    /// The file, for log lines.
    pub path: PathBuf,
    pub tasks: Vec<CronTask>,
}

/// One `cron:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CronTask {
    pub name: String,
    /// The path the periodic request is posted to.
    pub url: String,
    /// The schedule as written.
    pub schedule: String,
    /// The schedule, parsed (evaluated in UTC by `periodic`).
    pub cron: Cron,
    /// The entry's line in the file.
    pub line: Option<usize>,
}

/// Schedules are evaluated over `calendar::Utc`: in UTC, whatever the host's zone.
impl CronTask {
    /// The first tick strictly after `t`; None if it never fires again.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        self.cron
            .find_next_occurrence(&Utc(t), false)
            .ok()
            .map(|u| u.0)
    }

    /// The latest tick at or before `t`.
    pub fn latest_at(&self, t: i64) -> Option<i64> {
        self.cron
            .find_previous_occurrence(&Utc(t), true)
            .ok()
            .map(|u| u.0)
    }
}

#[cfg(test)]
impl CronTask {
    /// A task from its three values, each checked as in a file (`seconds`: six-field
    /// schedules, seconds first).
    pub fn new(name: &str, url: &str, schedule: &str, seconds: bool) -> Result<CronTask, String> {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(format!("`{name}` cannot be a task name"));
        }
        check_url(url)?;
        Ok(CronTask {
            name: name.into(),
            url: url.into(),
            schedule: schedule.into(),
            cron: parse_schedule(schedule, seconds)?,
            line: None,
        })
    }
}

/// The keys an entry may have that chore reads (others are ignored).
const ENTRY_KEYS: [&str; 3] = ["name", "url", "schedule"];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// Each field: what it is, its range, and the names it takes.
const FIELDS: [(&str, u64, u64, &[&str]); 6] = [
    ("second", 0, 59, &[]),
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of the month", 1, 31, &[]),
    ("month", 1, 12, &MONTHS),
    ("day of the week", 0, 7, &DAYS),
];
const ALIASES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// Read and check `path`. `seconds`: schedules have six fields, the first being seconds.
/// Every mistake, each naming the file (and its entry and line).
pub fn load(path: &Path, seconds: bool) -> Result<CronTable, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    parse(&text, seconds)
        .map(|tasks| CronTable {
            path: path.to_path_buf(),
            tasks,
        })
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect()
        })
}

/// The tasks of a `cron.yaml` text, or every mistake in it.
fn parse(text: &str, seconds: bool) -> Result<Vec<CronTask>, Vec<String>> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        vec![format!(
            "line {}: not valid YAML: {} (a schedule starting with `*` or `@` must be quoted)",
            e.marker().line(),
            e.info()
        )]
    })?;
    let Some(doc) = docs.first().filter(|d| !d.data.is_null()) else {
        return Err(vec![
            "the file is empty; it needs `version: 1` and `cron:`".into(),
        ]);
    };
    if !doc.data.is_mapping() {
        return Err(vec![format!(
            "line {}: expected a mapping with `version: 1` and `cron:`",
            doc.span.start.line()
        )]);
    }
    let mut errors = Vec::new();
    match doc.data.as_mapping_get("version") {
        None => errors.push("missing `version: 1` (Elastic Beanstalk requires it)".into()),
        // Ruby, which reads the file on Elastic Beanstalk, takes 1.0 and "1" for 1 too.
        Some(v)
            if v.data.as_integer() == Some(1)
                || v.data.as_floating_point() == Some(1.0)
                || v.data.as_str() == Some("1") => {}
        Some(v) => errors.push(format!(
            "line {}: `version` must be 1, not {}",
            v.span.start.line(),
            shown(v)
        )),
    }
    let mut tasks: Vec<CronTask> = Vec::new();
    match doc.data.as_mapping_get("cron") {
        None => errors.push("missing `cron:`, the list of tasks".into()),
        // `cron:` with nothing after it: no tasks.
        Some(list) if list.data.is_null() => {}
        Some(list) => match list.data.as_vec() {
            None => errors.push(format!(
                "line {}: `cron` must be a list of entries, each with `name`, `url` and `schedule`",
                list.span.start.line()
            )),
            Some(entries) => {
                for (i, entry) in entries.iter().enumerate() {
                    match task(entry, seconds) {
                        Ok(t) => match tasks.iter().position(|o| o.name == t.name) {
                            Some(first) => errors.push(format!(
                                "{}: the name `{}` is already used by {}",
                                where_(i, Some(&t.name), t.line),
                                t.name,
                                where_(first, None, tasks[first].line)
                            )),
                            None => tasks.push(t),
                        },
                        Err(mistakes) => {
                            let name = entry
                                .data
                                .as_mapping_get("name")
                                .and_then(|n| n.data.as_str());
                            let entry_line = entry.span.start.line();
                            errors.extend(mistakes.into_iter().map(|(line, what)| {
                                let line = line.unwrap_or(entry_line);
                                format!("{}: {what}", where_(i, name, Some(line)))
                            }));
                        }
                    }
                }
            }
        },
    }
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(errors)
    }
}

/// "entry 2 `nightly` (line 7)": the position counts from 1.
fn where_(index: usize, name: Option<&str>, line: Option<usize>) -> String {
    let mut s = format!("entry {}", index + 1);
    if let Some(n) = name.filter(|n| !n.trim().is_empty()) {
        s.push_str(&format!(" `{n}`"));
    }
    if let Some(l) = line {
        s.push_str(&format!(" (line {l})"));
    }
    s
}

/// A scalar as the user wrote it, for messages.
fn shown(node: &MarkedYaml) -> String {
    let d = &node.data;
    if let Some(s) = d.as_str() {
        format!("`{s}`")
    } else if let Some(i) = d.as_integer() {
        i.to_string()
    } else if let Some(f) = d.as_floating_point() {
        f.to_string()
    } else if let Some(b) = d.as_bool() {
        b.to_string()
    } else if d.is_null() {
        "empty".into()
    } else {
        "a list or mapping".into()
    }
}

/// A mistake in an entry, at the line of the value concerned (None: the entry's line).
type Mistake = (Option<usize>, String);

/// One entry, or what is wrong with it (all of it).
fn task(entry: &MarkedYaml, seconds: bool) -> Result<CronTask, Vec<Mistake>> {
    let Some(map) = entry.data.as_mapping() else {
        return Err(vec![(
            None,
            "expected a mapping with `name`, `url` and `schedule`".into(),
        )]);
    };
    let keys: Vec<&str> = map.keys().filter_map(|k| k.data.as_str()).collect();
    let mut errors: Vec<Mistake> = Vec::new();
    let mut text = |key: &str| -> Option<(String, usize)> {
        let Some(v) = entry.data.as_mapping_get(key) else {
            // Unknown keys are ignored, so a misspelt one shows only as a missing one.
            let typo = keys
                .iter()
                .find(|k| !ENTRY_KEYS.contains(k) && suggest::nearest(k, [key]).is_some());
            let hint = typo
                .map(|t| format!(" (found `{t}`: a typo?)"))
                .unwrap_or_default();
            errors.push((None, format!("missing `{key}`{hint}")));
            return None;
        };
        let line = v.span.start.line();
        match v.data.as_str() {
            Some(s) => Some((s.to_string(), line)),
            None => {
                let quote = if v.data.is_value() && !v.data.is_null() {
                    " (quote it)"
                } else {
                    ""
                };
                let m = format!("`{key}` must be a string, not {}{quote}", shown(v));
                errors.push((Some(line), m));
                None
            }
        }
    };
    let name = text("name");
    let url = text("url");
    let schedule = text("schedule");
    if let Some((n, line)) = &name {
        if n.trim().is_empty() {
            errors.push((Some(*line), "`name` is empty".into()));
        } else if n.chars().any(char::is_control) {
            let m = "`name` has a control character (it becomes a header)";
            errors.push((Some(*line), m.into()));
        }
    }
    if let Some((u, line)) = &url
        && let Err(e) = check_url(u)
    {
        errors.push((Some(*line), e));
    }
    let cron = schedule.as_ref().and_then(|(s, line)| {
        parse_schedule(s, seconds)
            .map_err(|e| errors.push((Some(*line), e)))
            .ok()
    });
    match (name, url, schedule, cron) {
        (Some((name, _)), Some((url, _)), Some((schedule, _)), Some(cron)) if errors.is_empty() => {
            Ok(CronTask {
                name,
                url,
                schedule,
                cron,
                line: Some(entry.span.start.line()),
            })
        }
        _ => Err(errors),
    }
}

/// `url` is a path (joined to the handler's host and port), usable as is in a request line.
fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with('/') {
        return Err(format!(
            "`url` must be a path starting with `/` (it is joined to the handler's host and port), not `{url}`"
        ));
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "`url` `{url}` has {}: a path is visible ASCII without spaces (percent-encode the rest)",
            if c.is_whitespace() {
                "a space".to_string()
            } else {
                format!("the character {c:?}")
            }
        ));
    }
    Ok(())
}

/// Parse a schedule in Elastic Beanstalk's dialect: five fields (minute, hour,
/// day-of-month, month, day-of-week) or, with `seconds`, six with seconds first; numbers,
/// three-letter month and day names, `*`, `,`, `-`, `/`, and the `@daily`-style aliases.
/// Day-of-month and day-of-week, both restricted, match either (Vixie cron).
fn parse_schedule(schedule: &str, seconds: bool) -> Result<Cron, String> {
    check_dialect(schedule, seconds)?;
    CronParser::builder()
        .seconds(if seconds {
            Seconds::Required
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| {
            let e = e.to_string();
            format!(
                "schedule `{schedule}` cannot be read: {}",
                e.trim_end_matches('.')
            )
        })
}

/// What croner accepts beyond the daemon's dialect (`L`, `W`, `#`, `?`, a year field) is
/// refused, so a `cron.yaml` that chore takes also works on Elastic Beanstalk.
fn check_dialect(schedule: &str, seconds: bool) -> Result<(), String> {
    let s = schedule.trim();
    if s.starts_with('@') {
        return if ALIASES.iter().any(|a| a.eq_ignore_ascii_case(s)) {
            Ok(())
        } else {
            Err(format!(
                "schedule `{s}`: unknown alias (known: {})",
                ALIASES.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    let want = if seconds { 6 } else { 5 };
    if !seconds && fields.len() == 6 {
        return Err(format!(
            "schedule `{s}` has six fields; Elastic Beanstalk ignores the sixth, so there `{}` runs on the first five (for `*/30 * * * * *`, every 30 minutes, not seconds); write five fields (minute hour day-of-month month day-of-week), or set `cron-seconds = true` on the queue to read the first field as seconds",
            fields[..5].join(" ")
        ));
    }
    if fields.len() != want {
        return Err(if seconds {
            format!(
                "schedule `{s}` has {} fields; with `cron-seconds = true` it has six (second minute hour day-of-month month day-of-week)",
                fields.len()
            )
        } else {
            format!(
                "schedule `{s}` has {} fields; it needs five (minute hour day-of-month month day-of-week)",
                fields.len()
            )
        });
    }
    let kinds = &FIELDS[if seconds { 0 } else { 1 }..];
    for (field, &(kind, low, high, names)) in fields.iter().zip(kinds) {
        let mut rest = *field;
        let mut after_slash = false;
        while let Some(c) = rest.chars().next() {
            if c.is_ascii_alphabetic() {
                let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                if !names.iter().any(|n| n.eq_ignore_ascii_case(&word)) {
                    return Err(unknown_in(s, field, &word, names));
                }
                rest = &rest[word.len()..];
            } else if c.is_ascii_digit() {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                // A step (after `/`) is a count, not a value of the field.
                let value: u64 = digits.parse().unwrap_or(u64::MAX);
                if !after_slash && !(low..=high).contains(&value) {
                    return Err(format!(
                        "schedule `{s}`: {digits} is out of range for the {kind} ({low} to {high})"
                    ));
                }
                rest = &rest[digits.len()..];
            } else if "*,-/".contains(c) {
                after_slash = c == '/';
                rest = &rest[1..];
            } else {
                return Err(unknown_in(s, field, &c.to_string(), names));
            }
        }
    }
    Ok(())
}

fn unknown_in(schedule: &str, field: &str, what: &str, names: &[&str]) -> String {
    let allowed = if names.is_empty() {
        "numbers, `*`, `,`, `-` and `/`".to_string()
    } else {
        format!(
            "numbers, the names {}, `*`, `,`, `-` and `/`",
            names.join(" ")
        )
    };
    format!(
        "schedule `{schedule}`: `{what}` in `{field}` is not in Elastic Beanstalk's cron dialect (this field takes {allowed})"
    )
}

#[cfg(test)]
mod tests;
