//! A message's metadata (times, sender, message attributes) as handlers see it: fields
//! of the batch input line, and `CHORE_*` variables in per-message mode
//! (docs/handlers.md, "Message metadata").
//!
//! Variable names are made from attribute names by a fixed mangling, and values are
//! bounded, so that no message can make its handler's environment unusable (a start that
//! fails with E2BIG would dead-letter it).

use crate::protocol::{AttributeSpec, MessageMeta};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The longest attribute value put in a `CHORE_ATTR_*` variable; a longer one is only in
/// `CHORE_ATTRIBUTES` (Linux takes at most 128 KiB in one variable).
pub const MAX_VAR_VALUE: usize = 32 * 1024;
/// The longest `CHORE_ATTRIBUTES`; beyond it the variable is left out.
pub const MAX_ATTRIBUTES_JSON: usize = 100 * 1024;

/// The attributes as one JSON object: name → `{"type":…,"value":…}`, in their order.
pub struct Attributes<'a>(pub &'a [AttributeSpec]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Typed<'a> {
            #[serde(rename = "type")]
            data_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<&'a str>,
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for a in self.0 {
            let typed = Typed {
                data_type: &a.data_type,
                value: a.value.as_deref(),
            };
            map.serialize_entry(&a.name, &typed)?;
        }
        map.end()
    }
}

/// `CHORE_ATTR_` and the attribute name, upper-cased, with every character other than
/// an ASCII letter, digit or `_` replaced by `_` (`trace-id` → `CHORE_ATTR_TRACE_ID`).
pub fn attribute_var(name: &str) -> String {
    let mangled: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect();
    format!("CHORE_ATTR_{mangled}")
}

/// Seconds since the epoch, as a variable's value: milliseconds at most.
fn seconds(t: f64) -> String {
    let s = format!("{t:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The per-message variables for `meta`: `CHORE_SENT_AT`, `CHORE_FIRST_RECEIVED_AT`,
/// `CHORE_SENDER_ID`, one `CHORE_ATTR_<NAME>` per String or Number attribute (the first of
/// several names that mangle alike; none for values over `MAX_VAR_VALUE` or holding a
/// NUL), and `CHORE_ATTRIBUTES`, all attributes as JSON (unless over
/// `MAX_ATTRIBUTES_JSON`).
pub fn env(meta: &MessageMeta) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    if let Some(t) = meta.sent_at {
        vars.push(("CHORE_SENT_AT".to_string(), seconds(t)));
    }
    if let Some(t) = meta.first_received_at {
        vars.push(("CHORE_FIRST_RECEIVED_AT".to_string(), seconds(t)));
    }
    if let Some(s) = meta.sender_id.as_deref().filter(|s| !s.contains('\0')) {
        vars.push(("CHORE_SENDER_ID".to_string(), s.to_string()));
    }
    if meta.attributes.is_empty() {
        return vars;
    }
    for a in &meta.attributes {
        let Some(v) = a.value.as_deref() else {
            continue;
        };
        let name = attribute_var(&a.name);
        if v.len() > MAX_VAR_VALUE || v.contains('\0') || vars.iter().any(|(k, _)| *k == name) {
            continue;
        }
        vars.push((name, v.to_string()));
    }
    let json = serde_json::to_string(&Attributes(&meta.attributes)).expect("attributes serialise");
    if json.len() <= MAX_ATTRIBUTES_JSON {
        vars.push(("CHORE_ATTRIBUTES".to_string(), json));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, data_type: &str, value: Option<&str>) -> AttributeSpec {
        AttributeSpec {
            name: name.into(),
            data_type: data_type.into(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn names_are_mangled_to_safe_variables() {
        assert_eq!(attribute_var("trace-id"), "CHORE_ATTR_TRACE_ID");
        assert_eq!(attribute_var("a.b_C9"), "CHORE_ATTR_A_B_C9");
        assert_eq!(attribute_var("é=x"), "CHORE_ATTR___X");
    }

    #[test]
    fn the_environment_holds_times_sender_and_bounded_attributes() {
        let big = "x".repeat(MAX_VAR_VALUE + 1);
        let meta = MessageMeta {
            sent_at: Some(1_700_000_000.123),
            first_received_at: Some(1_700_000_001.0),
            sender_id: Some("AROA:i-1".into()),
            attributes: vec![
                attr("a-b", "String", Some("first")),
                attr("a.b", "String", Some("second")),
                attr("blob", "Binary", None),
                attr("count", "Number.int", Some("7")),
                attr("huge", "String", Some(&big)),
                attr("nul", "String", Some("a\0b")),
            ],
        };
        let vars = env(&meta);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CHORE_SENT_AT"), Some("1700000000.123"));
        assert_eq!(get("CHORE_FIRST_RECEIVED_AT"), Some("1700000001"));
        assert_eq!(get("CHORE_SENDER_ID"), Some("AROA:i-1"));
        assert_eq!(get("CHORE_ATTR_A_B"), Some("first"), "the first name wins");
        assert_eq!(get("CHORE_ATTR_COUNT"), Some("7"));
        assert_eq!(get("CHORE_ATTR_BLOB"), None);
        assert_eq!(get("CHORE_ATTR_HUGE"), None);
        assert_eq!(get("CHORE_ATTR_NUL"), None);
        let all: serde_json::Value =
            serde_json::from_str(get("CHORE_ATTRIBUTES").unwrap()).unwrap();
        assert_eq!(all["a.b"]["value"], "second");
        assert_eq!(all["blob"], serde_json::json!({"type": "Binary"}));
        assert_eq!(
            all["huge"]["value"].as_str().unwrap().len(),
            MAX_VAR_VALUE + 1
        );
    }

    #[test]
    fn without_metadata_there_are_no_variables() {
        assert!(env(&MessageMeta::default()).is_empty());
    }
}
