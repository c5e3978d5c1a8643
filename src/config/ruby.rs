//! Ruby Chore's Chorefile: command-line options, one or more per line.
//!
//! Each line is parsed on its own, by the command line's own parser (`cli::Flags`), so that
//! every option means what it means on the command line, and a mistake names its line.
//! Unknown options get the nearest known one suggested.

use super::chorefile::FileLayer;
use super::error::{ConfigError, Origin};
use super::options::{self, OPTIONS};
use super::suggest;
use crate::config::cli::Flags;
use std::path::Path;

/// Ruby Chore's Chorefile: command-line options, each line parsed on its own so that a
/// mistake names its line.
pub fn read(path: &Path, text: &str) -> (FileLayer, Vec<ConfigError>) {
    let mut layer = FileLayer::default();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let origin = Origin::file(path, Some(n + 1));
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let key = flag_key(words[0]);
        if line.contains("<%") {
            errors.push(ConfigError {
                origin: Some(origin),
                key: None,
                message: "ERB templates are not supported; expand the file before starting chore"
                    .into(),
            });
            continue;
        }
        match Flags::from_words(&words) {
            Ok(flags) if !flags.config_file.is_empty() => errors.push(ConfigError::at(
                &origin,
                "config-file",
                "a Chorefile cannot name another Chorefile",
            )),
            Ok(flags) => layer.options.extend(
                flags
                    .values
                    .into_iter()
                    .map(|(k, v)| (k, v, origin.clone())),
            ),
            Err(e) => errors.push(ConfigError::at(&origin, key.clone(), ruby_error(&e, &key))),
        }
    }
    (layer, errors)
}

/// The option key a Ruby-format word names (`--batch-size=20` → `batch-size`, `-q` →
/// `queues`), or the word without its dashes when no option has that name.
fn flag_key(word: &str) -> String {
    let name = word.split('=').next().unwrap_or(word);
    let bare = name.trim_start_matches('-');
    OPTIONS
        .iter()
        .find(|o| {
            o.key == bare
                || o.alias == Some(bare)
                || o.ruby_spelling == Some(bare)
                || (name.len() == 2 && o.short.is_some_and(|c| name.ends_with(c)))
        })
        .map(|o| o.key.to_string())
        .unwrap_or_else(|| bare.to_string())
}

/// clap's message, first line only, with our own suggestion for an unknown flag.
fn ruby_error(e: &clap::Error, key: &str) -> String {
    if e.kind() == clap::error::ErrorKind::UnknownArgument {
        let longs = OPTIONS
            .iter()
            .filter(|o| o.kind != options::Kind::Ignored)
            .map(|o| o.key);
        return match suggest::nearest(key, longs) {
            Some(k) => format!("unknown option `--{key}` (did you mean `--{k}`?)"),
            None => format!("unknown option `--{key}`"),
        };
    }
    let msg = e.to_string();
    msg.lines()
        .next()
        .unwrap_or("invalid option")
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::Value;

    fn line(o: &Origin) -> Option<usize> {
        match o {
            Origin::File { line, .. } => *line,
            _ => None,
        }
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_ruby_chorefile_is_read_line_by_line() {
        let (layer, errors) = read(
            Path::new("Chorefile"),
            "# Ruby\n--concurrency 7 --batch-size=20\n--concurency 3\n--batch-size x\n-c other\n<%= x %>\n",
        );
        assert_eq!(
            layer
                .options
                .iter()
                .map(|(k, v, o)| (*k, v.clone(), line(o)))
                .collect::<Vec<_>>(),
            [
                ("batch-size", Value::Count(20), Some(2)),
                ("concurrency", Value::Count(7), Some(2))
            ]
        );
        assert_eq!(
            messages(&errors),
            [
                "Chorefile:3: key `concurency`: unknown option `--concurency` (did you mean `--concurrency`?)",
                "Chorefile:4: key `batch-size`: invalid value 'x' for '--batch-size <SIZE>': expected a whole number, found `x`",
                "Chorefile:5: key `config-file`: a Chorefile cannot name another Chorefile",
                "Chorefile:6: ERB templates are not supported; expand the file before starting chore",
            ]
        );
    }
}
