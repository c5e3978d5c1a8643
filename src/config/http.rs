//! An HTTP handler as written in a queue table: a handler table with `url` (or
//! `kind = "http"`), or a bare `"http://..."` string. chore then POSTs each message to the
//! application the way Elastic Beanstalk's SQS daemon does (docs/elastic-beanstalk.md);
//! the defaults are the daemon's.

use super::value::toml_type;
use super::{HttpHealth, HttpRetry, HttpTarget, suggest};
use std::time::Duration;

/// The keys of an HTTP handler table.
pub const HTTP_KEYS: &[&str] = &[
    "kind",
    "url",
    "mime-type",
    "user-agent",
    "connect-timeout",
    "inactivity-timeout",
    "connections",
    "error-visibility-timeout",
    "retry",
    "retention-period",
    "health-check",
    "sqsd-log",
];

/// The daemon's own defaults (`aws:elasticbeanstalk:sqsd`).
pub const DEFAULT_URL: &str = "http://localhost:80/";
pub const DEFAULT_USER_AGENT: &str = "aws-sqsd/3.0.4";

impl HttpTarget {
    fn new(url: &str) -> Result<HttpTarget, String> {
        let mut t = HttpTarget {
            url: String::new(),
            host: String::new(),
            port: 80,
            path: String::new(),
            mime_type: "application/json".into(),
            user_agent: DEFAULT_USER_AGENT.into(),
            connect_timeout: Duration::from_secs(5),
            inactivity_timeout: Duration::from_secs(299),
            connections: 50,
            error_visibility_timeout: Duration::from_secs(2),
            retry: HttpRetry::Sqsd,
            retention_period: Duration::from_secs(345_600),
            health: HttpHealth::Tcp,
            sqsd_log: false,
        };
        t.set_url(url)?;
        Ok(t)
    }

    /// `http://host[:port][/path]`: plain HTTP only (the application runs on this host or
    /// next to it; the daemon never spoke TLS either).
    fn set_url(&mut self, url: &str) -> Result<(), String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("`{url}`: only http:// URLs are supported (chore posts to an application beside it, as the SQS daemon does)")
            } else {
                format!("`{url}` is not an http:// URL")
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| {
                    format!("`{url}`: the port `{p}` is not a number from 1 to 65535")
                })?;
                (h, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || port == 0 {
            return Err(format!("`{url}` names no host (or port 0)"));
        }
        if authority.contains('@') || path.contains(char::is_whitespace) || path.contains('#') {
            return Err(format!(
                "`{url}`: no user, fragment or whitespace in the URL"
            ));
        }
        self.host = host.to_owned();
        self.port = port;
        self.path = path.to_owned();
        self.url = format!("http://{authority}{path}");
        Ok(())
    }

    /// `host:port`, for connecting and for health probes.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Read an HTTP handler: a `"http://..."` string or a table of `HTTP_KEYS`.
pub fn http_of(v: &toml::Value) -> Result<HttpTarget, String> {
    let table = match v {
        toml::Value::String(url) => return HttpTarget::new(url),
        toml::Value::Table(t) => t,
        other => {
            return Err(format!(
                "expected a URL or a handler table, found {}",
                toml_type(other)
            ));
        }
    };
    let url = match table.get("url") {
        Some(u) => u.as_str().ok_or("url must be a string")?,
        None => DEFAULT_URL,
    };
    let mut t = HttpTarget::new(url)?;
    for (k, v) in table {
        match k.as_str() {
            "url" => {}
            "kind" => {
                if v.as_str() != Some("http") {
                    return Err(format!("kind must be \"http\" or \"command\", found {v}"));
                }
            }
            "mime-type" => t.mime_type = header_text(k, v)?,
            "user-agent" => t.user_agent = header_text(k, v)?,
            "connect-timeout" => t.connect_timeout = seconds(k, v, 1.0, 60.0)?,
            "inactivity-timeout" => t.inactivity_timeout = seconds(k, v, 1.0, 36_000.0)?,
            "connections" => {
                t.connections = match v.as_integer() {
                    Some(n @ 1..=1000) => n as usize,
                    _ => {
                        return Err(format!(
                            "connections must be a whole number from 1 to 1000, found {v}"
                        ));
                    }
                }
            }
            "error-visibility-timeout" => {
                t.error_visibility_timeout = seconds(k, v, 0.0, 43_200.0)?
            }
            "retention-period" => t.retention_period = seconds(k, v, 60.0, 1_209_600.0)?,
            "retry" => {
                t.retry = match v.as_str() {
                    Some("sqsd") => HttpRetry::Sqsd,
                    Some("chore") => HttpRetry::Chore,
                    _ => return Err(format!("retry must be \"sqsd\" or \"chore\", found {v}")),
                }
            }
            "health-check" => {
                t.health = match v {
                    toml::Value::Boolean(false) => HttpHealth::Off,
                    toml::Value::Boolean(true) => HttpHealth::Tcp,
                    toml::Value::String(s) if s == "tcp" => HttpHealth::Tcp,
                    toml::Value::String(s) if s == "off" => HttpHealth::Off,
                    toml::Value::String(s) if s.starts_with('/') => {
                        HttpHealth::Url(format!("http://{}{s}", t.authority()))
                    }
                    toml::Value::String(s) if s.starts_with("http://") => {
                        let probe = HttpTarget::new(s)?;
                        HttpHealth::Url(probe.url)
                    }
                    _ => {
                        return Err(format!(
                            "health-check must be \"tcp\", \"off\", a path or an http:// URL, found {v}"
                        ));
                    }
                }
            }
            "sqsd-log" => t.sqsd_log = v.as_bool().ok_or("sqsd-log must be true or false")?,
            other => {
                return Err(format!(
                    "unknown HTTP handler key `{other}`{} (known: {})",
                    suggest::hint(other, HTTP_KEYS.iter().copied()),
                    HTTP_KEYS.join(", ")
                ));
            }
        }
    }
    Ok(t)
}

/// A handler table is an HTTP one when it has `url` or `kind = "http"`.
pub fn is_http(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.starts_with("http://") || s.starts_with("https://"),
        toml::Value::Table(t) => {
            t.contains_key("url") || t.get("kind").and_then(|k| k.as_str()) == Some("http")
        }
        _ => false,
    }
}

fn seconds(key: &str, v: &toml::Value, min: f64, max: f64) -> Result<Duration, String> {
    let s = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(x) => *x,
        _ => f64::NAN,
    };
    if !(min..=max).contains(&s) {
        return Err(format!(
            "{key} must be a number of seconds from {min} to {max}, found {v}"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A string that can be sent as a header value as it is.
fn header_text(key: &str, v: &toml::Value) -> Result<String, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{key} must be a string"))?;
    if s.is_empty() || s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(format!(
            "{key} must be non-empty, without control characters"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<HttpTarget, String> {
        let t: toml::Table = toml::from_str(&format!("h = {s}")).unwrap();
        http_of(&t["h"])
    }

    #[test]
    fn the_defaults_are_the_daemons() {
        let t = read("{ kind = \"http\" }").unwrap();
        assert_eq!(
            (t.url.as_str(), t.port, t.path.as_str()),
            ("http://localhost:80/", 80, "/")
        );
        assert_eq!(
            (t.user_agent.as_str(), t.connections),
            ("aws-sqsd/3.0.4", 50)
        );
        assert_eq!(t.error_visibility_timeout, Duration::from_secs(2));
        assert_eq!(t.retry, HttpRetry::Sqsd);
        assert_eq!(t.health, HttpHealth::Tcp);
    }

    #[test]
    fn a_url_string_or_table_is_read() {
        let t = read("\"http://127.0.0.1:3000\"").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 3000, "/")
        );
        let t = read(
            "{ url = \"http://app:8080/jobs?x=1\", connections = 4, retry = \"chore\", health-check = \"/up\" }",
        )
        .unwrap();
        assert_eq!((t.path.as_str(), t.connections), ("/jobs?x=1", 4));
        assert_eq!(t.health, HttpHealth::Url("http://app:8080/up".into()));
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        assert!(read("\"https://x/\"").unwrap_err().contains("only http://"));
        assert!(
            read("{ url = \"http://x:99999/\" }")
                .unwrap_err()
                .contains("port")
        );
        assert!(
            read("{ url = \"http://x/\", conections = 2 }")
                .unwrap_err()
                .contains("did you mean `connections`")
        );
        assert!(
            read("{ url = \"http://x/\", connections = 0 }")
                .unwrap_err()
                .contains("from 1 to 1000")
        );
        assert!(read("{ url = \"http://x/\", retry = \"never\" }").is_err());
    }
}
