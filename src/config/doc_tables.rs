//! The documentation's tables, made from the option tables, and the tests that hold
//! docs/configuration.md to them: every option and queue key listed, no other, with the
//! same spelling, type, bounds and default; every handler and HTTP handler key listed, no
//! other. (The Meaning column is prose, kept in the
//! documentation.)

use super::options::{Default, Kind, Opt};
use super::value::or_list;
use std::fmt::Write as _;

/// The documentation's row for an option: Option, Key, Type and Default cells (the
/// Meaning cell is prose, kept in the documentation).
pub fn doc_row(o: &Opt) -> [String; 4] {
    let mut flag = String::new();
    if let Some(c) = o.short {
        let _ = write!(flag, "`-{c}`, ");
    }
    let _ = match (o.kind, o.value_name) {
        (Kind::Bool, v) => write!(flag, "`--{} [{v}]`", o.key),
        (_, "") => write!(flag, "`--{}`", o.key),
        (_, v) => write!(flag, "`--{} {v}`", o.key),
    };
    if let Some(a) = o.alias {
        let _ = write!(flag, ", alias `--{a}`");
    }
    let key = match (o.not_in_toml, o.alias) {
        (Some(_), _) => "—".to_string(),
        (None, Some(a)) => format!("`{}` (or `{a}`)", o.key),
        (None, None) => format!("`{}`", o.key),
    };
    let kind = match o.kind {
        Kind::Files => "path, repeatable".to_string(),
        Kind::Count { min, max } if max >= u32::MAX as i64 => format!("count ≥ {min}"),
        Kind::Count { min, max } => format!("count, {min} to {max}"),
        Kind::Seconds { min, above: true } => format!("seconds > {min}"),
        Kind::Seconds { min, above: false } => format!("seconds ≥ {min}"),
        Kind::Bool => "`true`/`false`".into(),
        Kind::Text(what) | Kind::List { what, .. } => what.to_string(),
        Kind::Choice { values, .. } => {
            let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
            let quoted: Vec<&str> = quoted.iter().map(String::as_str).collect();
            or_list(&quoted)
        }
        Kind::Verbose => "repeatable / count".into(),
        Kind::Ignored => String::new(),
    };
    let default = match o.default {
        Default::Is("") => "empty".to_string(),
        Default::Is(v) => format!("`{v}`"),
        Default::Otherwise(words) => words.to_string(),
    };
    [flag, key, kind, default]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::{OPTIONS, QUEUE_KEYS};

    /// The rows of the Markdown table that follows `heading` in `doc`, as cells.
    fn doc_table(doc: &str, heading: &str) -> Vec<Vec<String>> {
        let start = doc
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading:?}"));
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect()
    }

    const DOC: &str = include_str!("../../docs/configuration.md");

    #[test]
    fn the_documentation_lists_exactly_the_options_with_their_defaults() {
        let rows = doc_table(DOC, "## Options");
        let want: Vec<[String; 4]> = OPTIONS
            .iter()
            .filter(|o| o.kind != Kind::Ignored)
            .map(doc_row)
            .collect();
        let got: Vec<[String; 4]> = rows
            .iter()
            .map(|r| std::array::from_fn(|i| r.get(i).cloned().unwrap_or_default()))
            .collect();
        let expected: String = want
            .iter()
            .map(|r| format!("| {} | … |\n", r.join(" | ")))
            .collect();
        assert_eq!(
            got, want,
            "docs/configuration.md's options table must start each row with:\n{expected}"
        );
    }

    #[test]
    fn the_documentation_lists_exactly_the_queue_keys() {
        let rows = doc_table(DOC, "## Queues");
        let got: Vec<[&str; 3]> = rows
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
            .collect();
        let want: Vec<[String; 3]> = QUEUE_KEYS
            .iter()
            .map(|k| {
                [
                    format!("`{}`", k.key),
                    k.kind.to_string(),
                    k.default.to_string(),
                ]
            })
            .collect();
        let want: Vec<[&str; 3]> = want
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
            .collect();
        assert_eq!(got, want);
    }

    /// The first cell of each row of the table after `heading`, unquoted, sorted.
    fn keys_documented(heading: &str) -> Vec<String> {
        let mut keys: Vec<String> = doc_table(DOC, heading)
            .iter()
            .map(|r| r[0].trim_matches('`').to_string())
            .collect();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_documentation_lists_exactly_the_handler_keys() {
        assert_eq!(
            keys_documented("A table gives more control:"),
            sorted(crate::config::options::HANDLER_KEYS)
        );
    }

    #[test]
    fn the_documentation_lists_exactly_the_http_handler_keys() {
        assert_eq!(
            keys_documented("### HTTP handlers"),
            sorted(crate::config::http::HTTP_KEYS)
        );
    }
}
