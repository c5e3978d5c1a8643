//! Retry delays: how long a failed message waits before its next attempt.
//!
//! A queue's `backoff` is an expression of `attempt` (the attempt that just failed,
//! counting from 1), evaluated by the `exmex` crate (for example `attempt ^ 2` or
//! `min(2 ^ attempt, 900)`; Ruby's `**` is accepted as `^`), a list of delays in seconds
//! (the last one repeats), or a plain number. Pure: no clock, no I/O.

use exmex::prelude::*;
use std::time::Duration;

/// The longest delay any backend can honour: SQS caps a visibility timeout at 12 hours.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 3600);

/// The default: Sidekiq's well-worn curve without its jitter: 16 s, 31 s, 96 s, 271 s,
/// 640 s ... capped at 12 hours.
pub const DEFAULT_EXPRESSION: &str = "attempt ^ 4 + 15";

#[derive(Clone)]
pub enum Backoff {
    Expression {
        source: String,
        expr: Box<FlatEx<f64>>,
    },
    List(Vec<Duration>),
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backoff::Expression { source, .. } => write!(f, "Backoff({source:?})"),
            Backoff::List(l) => write!(f, "Backoff({l:?})"),
        }
    }
}

impl std::fmt::Display for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backoff::Expression { source, .. } => write!(f, "{source:?}"),
            Backoff::List(l) => {
                let secs: Vec<String> = l.iter().map(|d| d.as_secs_f64().to_string()).collect();
                write!(f, "[{}] seconds", secs.join(", "))
            }
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::parse(DEFAULT_EXPRESSION).expect("the default backoff parses")
    }
}

impl Backoff {
    /// Parse an expression of `attempt`.
    pub fn parse(source: &str) -> Result<Backoff, String> {
        let rewritten = source.replace("**", "^");
        let expr = exmex::parse::<f64>(&rewritten)
            .map_err(|e| format!("invalid backoff expression `{source}`: {e}"))?;
        match expr.var_names() {
            [] => {}
            [v] if v == "attempt" => {}
            other => {
                return Err(format!(
                    "invalid backoff expression `{source}`: the only variable is `attempt`, found {}",
                    other.join(", ")
                ));
            }
        }
        let b = Backoff::Expression {
            source: source.to_string(),
            expr: Box::new(expr),
        };
        // Catch expressions that cannot give a delay (say `attempt - 100`) now, not at the
        // first failure in production.
        for attempt in [1, 2, 10] {
            b.try_delay(attempt)
                .map_err(|e| format!("invalid backoff expression `{source}`: {e}"))?;
        }
        Ok(b)
    }

    /// `"expr"`, `[5, 30, 300]` or a number of seconds, as written in a Chorefile.
    pub fn from_toml(value: &toml::Value) -> Result<Backoff, String> {
        fn secs(v: &toml::Value) -> Result<Duration, String> {
            let s = match v {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => {
                    return Err(format!(
                        "a delay must be a number of seconds, found {}",
                        other.type_str()
                    ));
                }
            };
            Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a delay in seconds ≥ 0"))
        }
        match value {
            toml::Value::String(s) => Backoff::parse(s),
            toml::Value::Array(items) if !items.is_empty() => Ok(Backoff::List(
                items.iter().map(secs).collect::<Result<_, _>>()?,
            )),
            toml::Value::Array(_) => Err("the list of delays is empty".into()),
            other => Ok(Backoff::List(vec![secs(other)?])),
        }
    }

    /// The delay after `attempt` failed (attempt counts from 1), capped at `MAX_DELAY`.
    pub fn delay(&self, attempt: u32) -> Duration {
        // Validated at parse time for small attempts; a later failure (say an overflow to
        // NaN) falls back to the cap rather than retrying hot.
        self.try_delay(attempt).unwrap_or(MAX_DELAY)
    }

    fn try_delay(&self, attempt: u32) -> Result<Duration, String> {
        let attempt = attempt.max(1);
        match self {
            Backoff::List(list) => {
                Ok(list[(attempt as usize - 1).min(list.len() - 1)].min(MAX_DELAY))
            }
            Backoff::Expression { expr, .. } => {
                let vars: &[f64] = if expr.var_names().is_empty() {
                    &[]
                } else {
                    &[attempt as f64]
                };
                let secs = expr.eval(vars).map_err(|e| e.to_string())?;
                if secs.is_nan() || secs < 0.0 {
                    return Err(format!(
                        "gives {secs} for attempt {attempt}, not a delay ≥ 0"
                    ));
                }
                Ok(Duration::try_from_secs_f64(secs)
                    .unwrap_or(MAX_DELAY)
                    .min(MAX_DELAY))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_of_attempt() {
        let b = Backoff::parse("attempt ^ 2").unwrap();
        assert_eq!(b.delay(3), Duration::from_secs(9));
        let b = Backoff::parse("min(2 ^ attempt, 900)").unwrap();
        assert_eq!(b.delay(3), Duration::from_secs(8));
        assert_eq!(b.delay(12), Duration::from_secs(900));
        let b = Backoff::parse("attempt ** 2").unwrap();
        assert_eq!(b.delay(4), Duration::from_secs(16));
        assert_eq!(
            Backoff::parse("5").unwrap().delay(7),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn capped_at_twelve_hours() {
        assert_eq!(Backoff::parse("10 ^ attempt").unwrap().delay(30), MAX_DELAY);
        assert_eq!(Backoff::default().delay(1), Duration::from_secs(16));
        assert_eq!(Backoff::default().delay(100), MAX_DELAY);
    }

    #[test]
    fn lists_repeat_their_last_delay() {
        let b =
            Backoff::from_toml(&toml::Value::Array(vec![1.into(), 30.into(), 300.into()])).unwrap();
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::from_secs(300));
        assert_eq!(b.delay(9), Duration::from_secs(300));
        let b = Backoff::from_toml(&toml::Value::Float(0.5)).unwrap();
        assert_eq!(b.delay(2), Duration::from_millis(500));
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(Backoff::parse("attempt ^^ 2").is_err());
        assert!(Backoff::parse("tries * 2").unwrap_err().contains("tries"));
        assert!(
            Backoff::parse("attempt - 100")
                .unwrap_err()
                .contains("not a delay")
        );
        assert!(Backoff::from_toml(&toml::Value::Array(vec![])).is_err());
        assert!(Backoff::from_toml(&toml::Value::Boolean(true)).is_err());
    }
}
