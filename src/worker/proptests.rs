//! Property tests of the lines that cross a pipe: what a batch handler prints, the
//! `Report` lines a worker writes, and the `BatchSpec` line it reads. Whatever arrives,
//! parsing never panics, and a verdict with any delay settles without panic.

use super::handler::BatchOutput;
use crate::backoff::Backoff;
use crate::protocol::{BatchSpec, Report, Verdict};
use crate::settle::{Settlement, decide};
use proptest::prelude::*;
use std::time::Duration;

/// A number as JSON can write it: small, huge, negative, fractional, exponent.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
        any::<i64>().prop_map(|i| i.to_string()),
        Just("1e308".to_string()),
        Just("-0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
    ]
}

/// Lines near the real ones, and arbitrary text.
fn line() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("ok"),
        Just("retry"),
        Just("fail"),
        Just("permanent"),
        Just("skip"),
        Just("OK"),
        Just("")
    ];
    prop_oneof![
        (any::<String>(), word.clone(), number(), any::<String>()).prop_map(|(id, r, d, e)| {
            format!(
                r#"{{"id":{},"result":"{r}","delay":{d},"error":{}}}"#,
                serde_json::to_string(&id).unwrap(),
                serde_json::to_string(&e).unwrap()
            )
        }),
        (number(), word, number())
            .prop_map(|(i, v, d)| format!(r#"{{"i":{i},"verdict":"{v}","delay":{d}}}"#)),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_line_parses_or_is_refused_without_panic(line in line()) {
        let _ = serde_json::from_str::<BatchOutput>(&line);
        let _ = serde_json::from_str::<BatchSpec>(&line);
        let mut lines = Vec::new();
        crate::protocol::for_each_line(line.as_bytes(), |l| {
            lines.push(l.to_string());
            true
        });
        prop_assert!(lines.len() <= line.len().max(1));
    }

    #[test]
    fn any_report_settles_without_panic_and_within_bounds(
        line in line(),
        attempt in any::<u32>(),
        max in proptest::option::of(any::<u32>()),
    ) {
        let Ok(report) = serde_json::from_str::<Report>(&line) else {
            return Ok(());
        };
        let s = decide(report.verdict, attempt, max, &Backoff::default(), report.delay, report.error.as_deref());
        if let Settlement::Retry { delay } = s {
            prop_assert!(delay <= Duration::from_secs(12 * 3600));
            prop_assert!(matches!(report.verdict, Verdict::Retry | Verdict::Fail));
        }
    }
}
