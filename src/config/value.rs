//! Option values: reading them as written (on the command line, in a Ruby-format or a TOML
//! Chorefile) and checking them against their option's bounds.
//!
//! Reading only types a value; `Opt::check` is the one place its bounds are enforced, and
//! `resolve` calls it for every value, wherever it came from. Messages use words ("a
//! number of seconds"), never Rust type names.

use super::options::{Default, Kind, MAX_SECONDS, Opt};

/// A value as read, before `check`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Signed, so that `-3` reads as a number out of range rather than as gibberish.
    Count(i64),
    Seconds(f64),
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Seconds(s) => write!(f, "{s}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::List(l) => write!(f, "{l:?}"),
        }
    }
}

pub fn toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "a whole number",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// What `kind` expects, in words, for "expected …, found …".
fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::Count { .. } | Kind::Verbose => "a whole number",
        Kind::Seconds { .. } => "a number of seconds",
        Kind::Bool => "true or false",
        Kind::List { .. } => "a list of names or a comma-separated string",
        Kind::Files | Kind::Text(_) | Kind::Choice { .. } | Kind::Ignored => "a string",
    }
}

impl Opt {
    /// A value as written on the command line or in a Ruby-format Chorefile.
    pub fn parse_str(&self, s: &str) -> Result<Value, String> {
        let wrong = || format!("expected {}, found `{s}`", expected(&self.kind));
        Ok(match self.kind {
            Kind::Count { .. } | Kind::Verbose => {
                Value::Count(s.trim().parse().map_err(|_| wrong())?)
            }
            Kind::Seconds { .. } => Value::Seconds(s.trim().parse().map_err(|_| wrong())?),
            Kind::Bool => Value::Bool(s.trim().parse().map_err(|_| wrong())?),
            Kind::List { .. } => Value::List(split_list(s)),
            Kind::Files | Kind::Text(_) | Kind::Choice { .. } | Kind::Ignored => {
                Value::Text(s.to_string())
            }
        })
    }

    /// A value as written in a TOML Chorefile.
    pub fn value_of(&self, v: &toml::Value) -> Result<Value, String> {
        let wrong = || format!("expected {}, found {}", expected(&self.kind), toml_type(v));
        Ok(match (self.kind, v) {
            (Kind::Count { .. } | Kind::Verbose, toml::Value::Integer(i)) => Value::Count(*i),
            (Kind::Seconds { .. }, toml::Value::Integer(i)) => Value::Seconds(*i as f64),
            (Kind::Seconds { .. }, toml::Value::Float(x)) => Value::Seconds(*x),
            (Kind::Bool, toml::Value::Boolean(b)) => Value::Bool(*b),
            (Kind::List { .. }, toml::Value::String(s)) => Value::List(split_list(s)),
            (Kind::List { .. }, toml::Value::Array(items)) => Value::List(
                items
                    .iter()
                    .map(|i| i.as_str().map(|s| s.trim().to_string()).ok_or_else(wrong))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            (Kind::Text(_) | Kind::Choice { .. }, toml::Value::String(s)) => Value::Text(s.clone()),
            _ => return Err(wrong()),
        })
    }

    /// Is `v` within this option's bounds? Every value, wherever it came from, is checked
    /// here and only here.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        match (self.kind, v) {
            (Kind::Count { min, max }, Value::Count(n)) if *n < min || *n > max => {
                Err(format!("{n} is out of range: {}", count_range(min, max)))
            }
            (Kind::Verbose, Value::Count(n)) if *n < 0 => {
                Err(format!("{n} is out of range: must be at least 0"))
            }
            (Kind::Seconds { min, above }, Value::Seconds(s)) => check_seconds(*s, min, above),
            (
                Kind::List {
                    non_empty: true, ..
                },
                Value::List(l),
            ) if l.is_empty() => Err("the list is empty".into()),
            (Kind::Choice { values, synonyms }, Value::Text(t)) => {
                let t = t.to_ascii_lowercase();
                if values.contains(&t.as_str()) || synonyms.contains(&t.as_str()) {
                    Ok(())
                } else {
                    Err(format!("`{t}` is not {}", or_list(values)))
                }
            }
            _ => Ok(()),
        }
    }

    /// The default as a value, when there is one.
    pub fn default_value(&self) -> Option<Value> {
        match self.default {
            Default::Is(s) => Some(self.parse_str(s).expect("the table's defaults parse")),
            Default::Otherwise(_) => None,
        }
    }

    /// The `--help` line: the help sentence, the choices if any, and the default.
    pub fn help_line(&self) -> String {
        let default = match self.default {
            Default::Is("") => "empty".to_string(),
            Default::Is(v) => v.to_string(),
            Default::Otherwise(words) => words.replace('`', ""),
        };
        match self.kind {
            Kind::Choice { values, .. } => {
                format!("{}: {} [default: {default}]", self.help, or_list(values))
            }
            _ => format!("{} [default: {default}]", self.help),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn count_range(min: i64, max: i64) -> String {
    if max >= u32::MAX as i64 {
        format!("must be at least {min}")
    } else {
        format!("must be from {min} to {max}")
    }
}

fn check_seconds(s: f64, min: f64, above: bool) -> Result<(), String> {
    if s.is_nan() {
        return Err("is not a number of seconds".into());
    }
    if s > MAX_SECONDS {
        return Err(format!("{s} is more than 30 days"));
    }
    if (above && s <= min) || s < min {
        return Err(format!(
            "{s} is not valid: must be {}",
            seconds_floor(min, above)
        ));
    }
    Ok(())
}

fn seconds_floor(min: f64, above: bool) -> String {
    match (min, above) {
        (m, true) => format!("more than {m} seconds"),
        (0.0, false) => "a number of seconds ≥ 0".into(),
        (m, false) => format!("at least {m} seconds"),
    }
}

/// `a`, `a or b`, `a, b or c`.
pub fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::{OPTIONS, option};

    #[test]
    fn every_default_parses_and_passes_its_own_check() {
        for o in OPTIONS {
            if let Some(v) = o.default_value() {
                assert_eq!(o.check(&v), Ok(()), "{}", o.key);
            }
        }
    }

    #[test]
    fn values_that_cannot_work_are_refused() {
        let check = |key: &str, v: &str| option(key).check(&option(key).parse_str(v).unwrap());
        assert!(check("concurrency", "4096").is_ok());
        assert_eq!(
            check("concurrency", "3000000000"),
            Err("3000000000 is out of range: must be from 1 to 4096".into())
        );
        assert!(check("concurrency", "0").is_err());
        assert!(check("batch-size", "10001").is_err());
        assert!(check("consumer-sleep-interval", "0").is_err());
        assert!(check("consumer-sleep-interval", "0.01").is_ok());
        assert!(check("default-queue-timeout", "0").is_err());
        assert!(check("fs-claim-lease", "1.5").is_err());
        assert!(check("shutdown-timeout", "0").is_ok());
        assert!(
            check("shutdown-timeout", "1e12")
                .unwrap_err()
                .contains("more than 30 days")
        );
        assert!(check("batch-timeout", "NaN").is_err());
        assert!(check("log-level", "WARNING").is_ok());
        assert_eq!(
            check("log-format", "xml"),
            Err("`xml` is not text, json or ruby".into())
        );
        assert!(check("dedupe-servers", " , ").is_err());
        assert!(check("max-attempts", "-1").is_err());
        assert!(check("verbose", "-1").is_err());
    }

    #[test]
    fn values_are_read_with_words_not_type_names() {
        let o = option("batch-timeout");
        assert_eq!(
            o.value_of(&toml::Value::String("soon".into())),
            Err("expected a number of seconds, found a string".into())
        );
        assert_eq!(
            o.parse_str("soon"),
            Err("expected a number of seconds, found `soon`".into())
        );
        assert_eq!(
            option("except-queues").value_of(&toml::Value::String("a, b,".into())),
            Ok(Value::List(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            option("concurrency").value_of(&toml::Value::Float(1.5)),
            Err("expected a whole number, found a number".into())
        );
    }

    #[test]
    fn help_carries_the_default() {
        assert_eq!(
            option("concurrency").help_line(),
            "Largest number of worker processes running at once [default: 4]"
        );
        assert_eq!(
            option("log-format").help_line(),
            "Log line format: text, json or ruby [default: text]"
        );
        assert!(
            option("queue-prefix")
                .help_line()
                .ends_with("[default: empty]")
        );
    }
}
