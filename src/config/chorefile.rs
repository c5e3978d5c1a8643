//! Reading one Chorefile: what it sets, and on which line.
//!
//! A Chorefile is TOML (docs/decisions/0009-the-chorefile-is-toml.md): each top-level key is
//! an option of `options::OPTIONS`, and `[queues.NAME]` tables declare the queues. Or it is
//! Ruby Chore's format, one or more `--flag value` per line, recognised by its first
//! meaningful character being `-`, and read line by line with the command line's own parser.
//!
//! TOML is parsed by `toml::de::DeTable`, which keeps the span of every key, so each value
//! carries its line from here on. This module only reads: top-level values are typed
//! (`Opt::value_of`); queue tables are kept as TOML values for `config::queue`; whether a
//! value is within bounds is decided once, later, by `resolve`. Unknown keys are mistakes
//! found here, each with the nearest known key suggested.

use super::error::{ConfigError, Origin};
use super::options::{self, OPTIONS, QUEUE_KEYS, Value};
use super::suggest;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One key of a queue table as written: its value, where it is, and where each key of a
/// table value is (a handler table's keys, `classes` entries).
#[derive(Debug, Clone)]
pub struct RawKey {
    pub value: toml::Value,
    pub origin: Origin,
    pub inner: BTreeMap<String, Origin>,
}

/// A `[queues.NAME]` table as written (or as several Chorefiles wrote it, merged).
#[derive(Debug, Clone)]
pub struct QueueTable {
    pub name: String,
    /// Its header (or first key) in the first Chorefile that declares it.
    pub origin: Origin,
    pub keys: BTreeMap<String, RawKey>,
    /// Keys written in it that are not queue keys (already reported).
    pub unknown: Vec<String>,
}

/// What one Chorefile says.
#[derive(Debug, Default)]
pub struct FileLayer {
    /// Top-level options, in the order they are written.
    pub options: Vec<(&'static str, Value, Origin)>,
    pub queues: Vec<QueueTable>,
    /// The file could not be read, or is not TOML: what it says is unknown.
    pub unreadable: bool,
    /// Words of a Ruby-format Chorefile that are neither an option nor its value, as
    /// `file:line: \`word\``: ignored, as Ruby Chore ignores them.
    pub ignored_words: Vec<String>,
}

/// Read `path`. Mistakes are collected, not fatal: what could be read is returned with them.
pub fn read(path: &Path) -> (FileLayer, Vec<ConfigError>) {
    let unreadable = |message: String, line: Option<usize>| {
        let e = ConfigError {
            origin: Some(Origin::file(path, line)),
            key: None,
            message,
        };
        let layer = FileLayer {
            unreadable: true,
            ..FileLayer::default()
        };
        (layer, vec![e])
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return unreadable(format!("cannot read Chorefile: {e}"), None),
    };
    // A byte-order mark (as some Windows editors write) is not part of the text.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let column =
                good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
            let m = format!(
                "not UTF-8 text: an invalid byte at column {column} (save the Chorefile as UTF-8)"
            );
            return unreadable(m, Some(line));
        }
    };
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    let (layer, mut errors) = if first.is_some_and(|l| l.starts_with('-')) {
        super::ruby::read(path, text)
    } else {
        read_toml(path, text)
    };
    // Keys come out of the TOML parser sorted by name: report in the order of the lines.
    errors.sort_by_key(|e| e.line());
    (layer, errors)
}

/// Where each line of a text starts, to find the line of a byte offset in O(log n): a
/// Chorefile of thousands of queues has tens of thousands of keys, each located.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn new(text: &str) -> LineStarts {
        let after_newlines = text.match_indices('\n').map(|(i, _)| i + 1);
        LineStarts(std::iter::once(0).chain(after_newlines).collect())
    }

    /// 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

fn read_toml(path: &Path, text: &str) -> (FileLayer, Vec<ConfigError>) {
    let mut layer = FileLayer::default();
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let lines = LineStarts::new(text);
    if !syntax.is_empty() {
        // What follows a syntax error is guesswork: report the syntax alone.
        let errors = syntax
            .iter()
            .map(|e| ConfigError {
                origin: Some(Origin::file(path, e.span().map(|s| lines.line_of(s.start)))),
                // The parser points at the second occurrence: name it.
                key: e
                    .message()
                    .starts_with("duplicate key")
                    .then(|| e.span().and_then(|s| text.get(s)))
                    .flatten()
                    .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
                    .filter(|k| !k.is_empty()),
                message: e.message().to_string(),
            })
            .collect();
        layer.unreadable = true;
        return (layer, errors);
    }
    let at = |span: std::ops::Range<usize>| Origin::file(path, Some(lines.line_of(span.start)));
    let mut errors = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let (name, origin) = (key.get_ref().as_ref(), at(key.span()));
        if name == "queues" {
            read_queues(value, &origin, &at, &mut layer, &mut errors);
            continue;
        }
        match options::toml_option(name) {
            Some(o) => match o.not_in_toml {
                Some(why) => errors.push(ConfigError::at(&origin, name, why)),
                None => match o.value_of(&plain(value)) {
                    Ok(v) => layer.options.push((o.key, v, origin)),
                    Err(m) => errors.push(ConfigError::at(&origin, name, m)),
                },
            },
            None => errors.push(ConfigError::at(
                &origin,
                name,
                unknown_top_level(name, value),
            )),
        }
    }
    layer.options.sort_by_key(|(_, _, o)| line(o));
    (layer, errors)
}

fn line(o: &Origin) -> Option<usize> {
    match o {
        Origin::File { line, .. } => *line,
        _ => None,
    }
}

/// `unknown key`, with the nearest top-level key, or where the key belongs.
fn unknown_top_level(name: &str, value: &Spanned<DeValue>) -> String {
    let keys = OPTIONS
        .iter()
        .filter(|o| o.not_in_toml.is_none())
        .flat_map(|o| [Some(o.key), o.alias])
        .flatten()
        .chain(["queues"]);
    match suggest::nearest(name, keys) {
        // `[queue.mail]` for `[queues.mail]`: name the table, not just the key.
        Some("queues") => match value.get_ref().as_table().and_then(|t| t.keys().next()) {
            Some(q) => format!("unknown key (did you mean `[queues.{}]`?)", q.get_ref()),
            None => "unknown key (did you mean `queues`?)".into(),
        },
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None if options::queue_key(name).is_some() => {
            format!("unknown key: `{name}` is a queue key; put it in a [queues.NAME] table")
        }
        None => "unknown key".into(),
    }
}

/// The `queues` key: a table of queue tables.
fn read_queues(
    value: &Spanned<DeValue>,
    origin: &Origin,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
    layer: &mut FileLayer,
    errors: &mut Vec<ConfigError>,
) {
    let Some(queues) = value.get_ref().as_table() else {
        errors.push(ConfigError::at(origin, "queues", option_message("queues")));
        return;
    };
    for (name, table) in queues.iter() {
        let origin = at(name.span());
        let name = name.get_ref().to_string();
        let section = format!("queues.{name}");
        let Some(table) = table.get_ref().as_table() else {
            errors.push(ConfigError::at(&origin, section, "a queue must be a table"));
            continue;
        };
        let (mut keys, mut unknown) = (BTreeMap::new(), Vec::new());
        for (key, value) in table.iter() {
            let key_origin = at(key.span());
            let key = key.get_ref().to_string();
            if options::queue_key(&key).is_none() {
                let m = unknown_queue_key(&key);
                errors.push(ConfigError::at(&key_origin, format!("{section}.{key}"), m));
                unknown.push(key);
                continue;
            }
            let inner = value
                .get_ref()
                .as_table()
                .map(|t| {
                    t.iter()
                        .map(|(k, _)| (k.get_ref().to_string(), at(k.span())))
                        .collect()
                })
                .unwrap_or_default();
            let raw = RawKey {
                value: plain(value),
                origin: key_origin,
                inner,
            };
            keys.insert(key, raw);
        }
        layer.queues.push(QueueTable {
            name,
            origin,
            keys,
            unknown,
        });
    }
}

fn option_message(key: &str) -> &'static str {
    options::option(key).not_in_toml.unwrap_or("unknown key")
}

/// `unknown key`, with the nearest queue key, or a word on a top-level option.
fn unknown_queue_key(key: &str) -> String {
    match suggest::nearest(key, QUEUE_KEYS.iter().map(|k| k.key)) {
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None if options::toml_option(key).is_some() => format!(
            "unknown key: `{key}` is a top-level option, not a queue key; put it above the first table"
        ),
        None => format!(
            "unknown key (known: {})",
            QUEUE_KEYS
                .iter()
                .map(|k| k.key)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A spanned TOML value as a plain `toml::Value`.
fn plain(v: &Spanned<DeValue>) -> toml::Value {
    let de = toml::de::ValueDeserializer::from(v.clone());
    // Every parsed value converts; a failure would be a toml bug, and reads as a mistake.
    toml::Value::deserialize(de).unwrap_or_else(|e| toml::Value::String(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> (FileLayer, Vec<ConfigError>) {
        let (layer, mut errors) = read_toml(Path::new("Chorefile"), text);
        errors.sort_by_key(|e| e.line());
        (layer, errors)
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn line_starts_give_the_line_of_every_offset() {
        let text = "a = 1\n\nb = 2\r\n[queues.c]\nx";
        let lines = LineStarts::new(text);
        for offset in 0..=text.len() + 2 {
            let counted = text[..offset.min(text.len())].matches('\n').count() + 1;
            assert_eq!(lines.line_of(offset), counted, "offset {offset}");
        }
        assert_eq!(LineStarts::new("").line_of(0), 1);
    }

    #[test]
    fn every_key_keeps_its_line() {
        let (layer, errors) = read_text(
            "concurrency = 3\n\n[queues.mail]\nhandler = [\"x\"]\nclasses.Foo = [\"y\"]\n\
             [queues]\nrep.handler = { command = [\"z\"] }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(layer.options[0].0, "concurrency");
        assert_eq!(line(&layer.options[0].2), Some(1));
        let mail = layer.queues.iter().find(|q| q.name == "mail").unwrap();
        assert_eq!(line(&mail.origin), Some(3));
        assert_eq!(line(&mail.keys["handler"].origin), Some(4));
        assert_eq!(line(&mail.keys["classes"].inner["Foo"]), Some(5));
        let rep = layer.queues.iter().find(|q| q.name == "rep").unwrap();
        assert_eq!(line(&rep.keys["handler"].origin), Some(7));
    }

    #[test]
    fn unknown_keys_are_collected_with_suggestions() {
        let (_, errors) = read_text(
            "concurency = 3\n[queue.mail]\nhandler = [\"x\"]\n[queues.a]\nhandlr = [\"x\"]\n\
             retries = 2\nconcurrency = 1\n",
        );
        assert_eq!(
            messages(&errors),
            [
                "Chorefile:1: key `concurency`: unknown key (did you mean `concurrency`?)",
                "Chorefile:2: key `queue`: unknown key (did you mean `[queues.mail]`?)",
                "Chorefile:5: key `queues.a.handlr`: unknown key (did you mean `handler`?)",
                "Chorefile:6: key `queues.a.retries`: unknown key (known: backend, handler, classes, timeout, backoff, max-attempts, on-permanent-failure, dedupe, dedupe-key, pass-aws-credentials, memory-limit, cron-file, cron-seconds, url, create, wait-time, dead-letter-queue)",
                "Chorefile:7: key `queues.a.concurrency`: unknown key: `concurrency` is a top-level option, not a queue key; put it above the first table",
            ]
        );
        let (_, errors) = read_text("queue_polling_size = 3\nhandler = [\"x\"]\n");
        assert_eq!(
            messages(&errors),
            [
                "Chorefile:1: key `queue_polling_size`: unknown key (did you mean `queue-polling-size`?)",
                "Chorefile:2: key `handler`: unknown key: `handler` is a queue key; put it in a [queues.NAME] table",
            ]
        );
    }

    #[test]
    fn values_are_typed_with_words() {
        let (_, errors) = read_text("batch-timeout = \"soon\"\nconfig-file = \"x\"\nqueues = 3\n");
        assert_eq!(
            messages(&errors),
            [
                "Chorefile:1: key `batch-timeout`: expected a number of seconds, found a string",
                "Chorefile:2: key `config-file`: a Chorefile cannot name another Chorefile",
                "Chorefile:3: key `queues`: declare queues as [queues.NAME] tables; choose among them with --queues on the command line",
            ]
        );
    }

    #[test]
    fn a_syntax_error_has_a_line() {
        let (_, errors) = read_text("concurrency = 2\n[queues.a\n");
        assert_eq!(errors[0].line(), Some(2), "{errors:?}");
    }
}
