//! A message as `dump` writes it and `load` reads it: one JSON line holding `id`,
//! `attributes` (strings: where it was, its attempt, class, sending time, reason…) and the
//! `body` as a JSON string, so that a body makes the round trip byte for byte. And the one
//! selection rule (`Select::matches`) that `requeue` applies to either backend's messages.

use crate::config::queue_cli::Select;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub body: String,
}

impl Record {
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("strings serialise")
    }

    /// Read one dump line; the error says what is wrong (the caller adds where).
    pub fn parse(line: &str) -> Result<Record, String> {
        serde_json::from_str(line).map_err(|e| {
            format!("not a dump line (a JSON object with string `id` and `body`): {e}")
        })
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What a selection looks at in one message.
pub struct Seen<'a> {
    pub id: &'a str,
    pub class: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// When it was sent, Unix seconds.
    pub sent_at: Option<i64>,
}

impl Select {
    /// Whether the message is selected at `now` (Unix seconds): every criterion given
    /// must hold; none given selects everything.
    pub fn matches(&self, m: &Seen, now: i64) -> bool {
        let age = m.sent_at.map(|t| now - t);
        (self.ids.is_empty() || self.ids.iter().any(|i| i == m.id))
            && (self.classes.is_empty()
                || m.class.is_some_and(|c| self.classes.iter().any(|k| k == c)))
            && self
                .reason
                .as_deref()
                .is_none_or(|r| m.reason.is_some_and(|have| have.contains(r)))
            && self
                .older_than
                .is_none_or(|s| age.is_some_and(|a| a >= s as i64))
            && self
                .newer_than
                .is_none_or(|s| age.is_some_and(|a| a <= s as i64))
    }

    /// Whether the selection needs the message's body (to read its class).
    pub fn needs_class(&self) -> bool {
        !self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(id: &'a str, class: Option<&'a str>, reason: Option<&'a str>) -> Seen<'a> {
        Seen {
            id,
            class,
            reason,
            sent_at: Some(1000),
        }
    }

    #[test]
    fn nothing_given_selects_everything() {
        assert!(Select::default().matches(&seen("a", None, None), 1000));
    }

    #[test]
    fn every_criterion_given_must_hold() {
        let s = Select {
            ids: vec!["a".into(), "b".into()],
            classes: vec!["Mail".into()],
            reason: Some("timeout".into()),
            older_than: Some(60),
            newer_than: Some(3600),
        };
        let now = 1100;
        assert!(s.matches(
            &seen("b", Some("Mail"), Some("worker timeout after 5s")),
            now
        ));
        assert!(!s.matches(&seen("c", Some("Mail"), Some("timeout")), now));
        assert!(!s.matches(&seen("a", Some("Other"), Some("timeout")), now));
        assert!(!s.matches(&seen("a", None, Some("timeout")), now));
        assert!(!s.matches(&seen("a", Some("Mail"), Some("exit 1")), now));
        assert!(!s.matches(&seen("a", Some("Mail"), None), now));
        // 100 s old: older than 60, newer than 3600.
        assert!(!s.matches(&seen("a", Some("Mail"), Some("timeout")), 1030));
        assert!(!s.matches(&seen("a", Some("Mail"), Some("timeout")), 1000 + 3601));
    }

    #[test]
    fn a_record_round_trips_its_body_exactly() {
        let body = "{\"class\":\"X\",\"args\":[\"é\\u0000\\n\", 1.50, \"\\ud83d\\ude00\"]}  ";
        let r = Record {
            id: "q-X-1-2".into(),
            attributes: BTreeMap::from([("attempt".into(), "3".into())]),
            body: body.into(),
        };
        let back = Record::parse(&r.line()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.body.as_bytes(), body.as_bytes());
        assert!(Record::parse("{\"id\":1,\"body\":\"x\"}").is_err());
        assert!(Record::parse("{\"id\":\"a\"}").is_err());
        assert!(Record::parse("[]").is_err());
    }
}
