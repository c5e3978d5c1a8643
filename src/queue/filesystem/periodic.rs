//! The periodic-task wire form on the filesystem queue, which has no message attributes:
//! the body is a JSON object of exactly the three `beanstalk.sqsd.*` strings, in the order
//! Elastic Beanstalk lists them, so the consumer can tell a periodic message by its body.

use crate::queue::Periodic;

/// `{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.task_name":"n","beanstalk.sqsd.scheduled_time":"…"}`
pub fn body(m: &Periodic) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in m.fields().into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Written by hand to keep this order; serde_json escapes the values.
        out.push_str(&format!(
            "\"{key}\":{}",
            serde_json::to_string(value).expect("a string serialises")
        ));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_three_keys_in_order() {
        let m = Periodic {
            task: "n".into(),
            path: "/x".into(),
            tick: 1_795_971_600,
            scheduled_time: "2026-11-29 17:00:00 UTC".into(),
        };
        assert_eq!(
            body(&m),
            r#"{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.task_name":"n","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#
        );
    }

    #[test]
    fn values_are_escaped_and_the_body_reads_back() {
        let m = Periodic {
            task: "say \"hi\"\\now".into(),
            path: "/a?b=c".into(),
            tick: 0,
            scheduled_time: "1970-01-01 00:00:00 UTC".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&body(&m)).unwrap();
        assert_eq!(v["beanstalk.sqsd.task_name"], "say \"hi\"\\now");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }
}
