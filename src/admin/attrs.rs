//! A message's SQS message attributes inside a dump record, and back again, so that
//! `dump` → `load` keeps them as SQS holds them.
//!
//! A record's attributes are a flat map of strings (easy to read and to `grep`), so each
//! SQS attribute `NAME` becomes `attr.NAME` = its value, and, unless its type is plain
//! `String`, `attr.NAME:type` = its type (`Number`, `Binary`, or a custom `String.x`…).
//! A Binary value is written in base64. SQS never allows `:` in a name, so the two keys
//! cannot be confused. SQS takes back what it gave; a hand-written name it would refuse
//! (an `AWS.` or `Amazon.` prefix, a character outside `A-Za-z0-9_-.`, more than ten
//! attributes) is left out and reported rather than failing the whole load.

use super::record::Record;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_smithy_types::base64;
use std::collections::BTreeMap;

const PREFIX: &str = "attr.";
const TYPE: &str = ":type";
/// SQS's limit of message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// Message attributes by name, as `Outgoing` publishes them.
pub type Attributes = Vec<(String, MessageAttributeValue)>;

/// Add the record entries of one received message attribute to `out`.
pub fn to_entries(name: &str, v: &MessageAttributeValue, out: &mut BTreeMap<String, String>) {
    let ty = v.data_type();
    let value = if ty.starts_with("Binary") {
        base64::encode(v.binary_value().map_or(&[][..], Blob::as_ref))
    } else {
        v.string_value().unwrap_or_default().to_string()
    };
    out.insert(format!("{PREFIX}{name}"), value);
    if ty != "String" {
        out.insert(format!("{PREFIX}{name}{TYPE}"), ty.to_string());
    }
}

/// How many message attributes a record carries.
pub fn count(r: &Record) -> usize {
    names(r).count()
}

fn names(r: &Record) -> impl Iterator<Item = &str> {
    r.attributes
        .keys()
        .filter_map(|k| k.strip_prefix(PREFIX))
        .filter(|k| !k.ends_with(TYPE))
}

/// The record's message attributes as SQS takes them, and the names left out because
/// SQS would refuse them. Err: the record cannot be read (a type without a value, a
/// Binary value that is not base64).
pub fn to_send(r: &Record) -> Result<(Attributes, Vec<String>), String> {
    let mut keep = Vec::new();
    let mut refused = Vec::new();
    for key in r.attributes.keys() {
        if let Some(name) = key.strip_prefix(PREFIX).and_then(|k| k.strip_suffix(TYPE))
            && !r.attributes.contains_key(&format!("{PREFIX}{name}"))
        {
            return Err(format!("`{key}` without `{PREFIX}{name}`"));
        }
    }
    for name in names(r) {
        let value = &r.attributes[&format!("{PREFIX}{name}")];
        let ty = r
            .attributes
            .get(&format!("{PREFIX}{name}{TYPE}"))
            .map_or("String", String::as_str);
        let built = if ty.starts_with("Binary") {
            let bytes = base64::decode(value)
                .map_err(|e| format!("`{PREFIX}{name}` is not base64: {e}"))?;
            MessageAttributeValue::builder().binary_value(Blob::new(bytes))
        } else {
            MessageAttributeValue::builder().string_value(value)
        };
        if !sqs_takes(name, ty) || keep.len() == MAX_ATTRIBUTES {
            refused.push(name.to_string());
            continue;
        }
        let built = built
            .data_type(ty)
            .build()
            .map_err(|e| format!("`{PREFIX}{name}`: {e}"))?;
        keep.push((name.to_string(), built));
    }
    Ok((keep, refused))
}

/// Bytes SQS counts towards a message's size for these attributes.
pub fn size(attributes: &Attributes) -> usize {
    attributes
        .iter()
        .map(|(name, v)| {
            name.len()
                + v.data_type().len()
                + v.string_value().map_or(0, str::len)
                + v.binary_value().map_or(0, |b| b.as_ref().len())
        })
        .sum()
}

/// Whether SQS accepts a message attribute of this name and type.
fn sqs_takes(name: &str, ty: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = ty.split('.').next().unwrap_or_default();
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && matches!(base, "String" | "Number" | "Binary")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entries: &[(&str, &str)]) -> Record {
        Record {
            id: "m".into(),
            attributes: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: "b".into(),
        }
    }

    fn value(ty: &str, s: Option<&str>, b: Option<&[u8]>) -> MessageAttributeValue {
        MessageAttributeValue::builder()
            .data_type(ty)
            .set_string_value(s.map(str::to_string))
            .set_binary_value(b.map(Blob::new))
            .build()
            .unwrap()
    }

    #[test]
    fn each_type_makes_the_round_trip() {
        let sent = [
            (
                "beanstalk.sqsd.task_name",
                value("String", Some("Tick"), None),
            ),
            ("n", value("Number.float", Some("-1.50"), None)),
            ("raw", value("Binary", None, Some(&[0, 255, 10, 13]))),
            ("empty-ish", value("String.note", Some(" é "), None)),
        ];
        let mut entries = BTreeMap::new();
        for (name, v) in &sent {
            to_entries(name, v, &mut entries);
        }
        assert_eq!(entries["attr.beanstalk.sqsd.task_name"], "Tick");
        assert!(!entries.contains_key("attr.beanstalk.sqsd.task_name:type"));
        assert_eq!(entries["attr.raw:type"], "Binary");
        let r = Record {
            id: "m".into(),
            attributes: entries,
            body: "b".into(),
        };
        let r = Record::parse(&r.line()).unwrap();
        assert_eq!(count(&r), 4);
        let (back, refused) = to_send(&r).unwrap();
        assert!(refused.is_empty());
        let back: BTreeMap<_, _> = back.into_iter().collect();
        assert_eq!(back.len(), 4);
        for (name, v) in &sent {
            assert_eq!(&back[*name], v, "{name}");
        }
    }

    #[test]
    fn names_sqs_refuses_are_left_out_and_reported() {
        let r = record(&[
            ("attr.AWS.trace", "x"),
            ("attr.amazon.x", "x"),
            ("attr.a..b", "x"),
            ("attr.sp ace", "x"),
            ("attr.odd", "x"),
            ("attr.odd:type", "Date"),
            ("attr.ok", "x"),
            ("queue", "jobs"),
        ]);
        let (keep, mut refused) = to_send(&r).unwrap();
        assert_eq!(keep.len(), 1);
        assert_eq!(keep[0].0, "ok");
        refused.sort();
        assert_eq!(refused, ["AWS.trace", "a..b", "amazon.x", "odd", "sp ace"]);
    }

    #[test]
    fn more_than_ten_keeps_ten() {
        let entries: Vec<(String, String)> = (0..12)
            .map(|i| (format!("attr.a{i:02}"), "v".into()))
            .collect();
        let r = Record {
            id: "m".into(),
            attributes: entries.into_iter().collect(),
            body: "b".into(),
        };
        let (keep, refused) = to_send(&r).unwrap();
        assert_eq!(
            (keep.len(), refused),
            (10, vec!["a10".into(), "a11".into()])
        );
    }

    #[test]
    fn unreadable_attributes_are_errors() {
        let bad = record(&[("attr.raw", "%%"), ("attr.raw:type", "Binary")]);
        assert!(to_send(&bad).unwrap_err().contains("not base64"));
        let orphan = record(&[("attr.t:type", "Number")]);
        assert!(to_send(&orphan).unwrap_err().contains("without"));
    }

    #[test]
    fn size_counts_name_type_and_value() {
        let a = vec![
            ("ab".to_string(), value("String", Some("xyz"), None)),
            ("c".to_string(), value("Binary", None, Some(&[1, 2]))),
        ];
        assert_eq!(size(&a), 2 + 6 + 3 + 1 + 6 + 2);
    }
}
