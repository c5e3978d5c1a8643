//! Ruby Chore's Chorefile: command-line options, split on whitespace as Ruby Chore splits
//! the file.
//!
//! As in Ruby Chore, the whole file is one list of words: an option's value may stand on
//! the next line, and a word that is neither an option nor an option's value is ignored
//! (chore says so at start, naming its line). Each option is parsed by the command line's
//! own parser (`cli::Flags`), so that it means what it means on the command line, and a
//! mistake names its line and option. Unknown options get the nearest known one suggested.
//! Unlike Ruby Chore, a line starting with `#` is a comment, and ERB is refused.

use super::chorefile::FileLayer;
use super::error::{ConfigError, Origin};
use super::options::{self, Kind, OPTIONS};
use super::suggest;
use crate::config::cli::Flags;
use std::path::Path;

/// Ruby Chore's Chorefile, read as Ruby Chore reads it; each mistake names its line.
pub fn read(path: &Path, text: &str) -> (FileLayer, Vec<ConfigError>) {
    let mut layer = FileLayer::default();
    let mut errors = Vec::new();
    let mut words: Vec<(usize, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.contains("<%") {
            errors.push(ConfigError {
                origin: Some(Origin::file(path, Some(n + 1))),
                key: None,
                message: "ERB templates are not supported; expand the file before starting chore"
                    .into(),
            });
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        words.extend(line.split_whitespace().map(|w| (n + 1, w)));
    }
    let mut rest = words.into_iter().peekable();
    while let Some((line, word)) = rest.next() {
        let origin = Origin::file(path, Some(line));
        if !word.starts_with('-') || word == "-" {
            layer
                .ignored_words
                .push(format!("{}:{line}: `{word}`", path.display()));
            continue;
        }
        let key = flag_key(word);
        let mut option = vec![word];
        if let Some(&(_, value)) = rest.peek()
            && takes_next_word(word, value)
        {
            option.push(value);
            rest.next();
        }
        match Flags::from_words(&option) {
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
            Err(e) => errors.push(ConfigError::at(
                &origin,
                key.clone(),
                ruby_error(&e, word, &key),
            )),
        }
    }
    errors.sort_by_key(ConfigError::line);
    (layer, errors)
}

/// Whether option word `word` takes `next` as its value: it has none attached, it is one
/// that takes a value, and `next` is not itself an option (a switch takes only `true` or
/// `false`). An unknown option takes nothing: its mistake is its own.
fn takes_next_word(word: &str, next: &str) -> bool {
    let attached = word.contains('=') || (!word.starts_with("--") && word.len() > 2);
    let Some(o) = option_of(word) else {
        return false;
    };
    // `--shutdown-timeout -1` is a value (out of range), not another option.
    let negative_number = next.starts_with('-') && next[1..].parse::<f64>().is_ok();
    if attached || (next.starts_with('-') && !negative_number) {
        return false;
    }
    match o.kind {
        Kind::Bool => matches!(next, "true" | "false"),
        Kind::Verbose => false,
        _ => true,
    }
}

/// The option a Ruby-format word names (`--batch-size=20`, `--batch_size`, `-q`).
fn option_of(word: &str) -> Option<&'static options::Opt> {
    let name = word.split('=').next().unwrap_or(word);
    let bare = name.trim_start_matches('-');
    OPTIONS.iter().find(|o| {
        o.key == bare
            || o.alias == Some(bare)
            || o.ruby_spelling == Some(bare)
            || (name.len() == 2
                && !name.starts_with("--")
                && o.short.is_some_and(|c| name.ends_with(c)))
    })
}

/// The option key a Ruby-format word names (`--batch-size=20` → `batch-size`, `-q` →
/// `queues`), or the word without its dashes when no option has that name.
fn flag_key(word: &str) -> String {
    match option_of(word) {
        Some(o) => o.key.to_string(),
        None => {
            let name = word.split('=').next().unwrap_or(word);
            name.trim_start_matches('-').to_string()
        }
    }
}

/// clap's message, first line only, with our own suggestion for an unknown flag (named
/// as it was written).
fn ruby_error(e: &clap::Error, word: &str, key: &str) -> String {
    if e.kind() == clap::error::ErrorKind::UnknownArgument {
        let written = word.split('=').next().unwrap_or(word);
        let longs = OPTIONS
            .iter()
            .filter(|o| o.kind != options::Kind::Ignored)
            .map(|o| o.key);
        return match suggest::nearest(key, longs).filter(|_| written.starts_with("--")) {
            Some(k) => format!("unknown option `{written}` (did you mean `--{k}`?)"),
            None => format!("unknown option `{written}`"),
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
    fn a_ruby_chorefile_is_read_as_ruby_chore_reads_it() {
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
                ("concurrency", Value::Count(7), Some(2)),
                ("batch-size", Value::Count(20), Some(2))
            ]
        );
        // An unknown option takes no value: `3` is a word of its own, ignored.
        assert_eq!(layer.ignored_words, ["Chorefile:3: `3`"]);
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

    #[test]
    fn values_may_stand_on_the_next_line_and_other_words_are_ignored() {
        let (layer, errors) = read(
            Path::new("cf"),
            "--concurrency\n6\n--batch-size 7 trailing words\n--strict-batching\n--shutdown-timeout\n-1\n-h\n",
        );
        let got: Vec<_> = layer
            .options
            .iter()
            .map(|(k, v, o)| (*k, v.clone(), line(o)))
            .collect();
        assert_eq!(
            got,
            [
                ("concurrency", Value::Count(6), Some(1)),
                ("batch-size", Value::Count(7), Some(3)),
                ("strict-batching", Value::Bool(true), Some(4)),
                // Its range is checked with every other source's (`resolve`).
                ("shutdown-timeout", Value::Seconds(-1.0), Some(5)),
            ]
        );
        assert_eq!(layer.ignored_words, ["cf:3: `trailing`", "cf:3: `words`"]);
        assert_eq!(messages(&errors), ["cf:7: key `h`: unknown option `-h`"]);
    }
}
