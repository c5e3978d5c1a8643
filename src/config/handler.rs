//! A handler as written in a queue table: `["cmd", "arg"]`, or a table with `command`,
//! `mode`, `env`, `dir` and `kind = "command"`, and for a preloaded one (`mode =
//! "preload"`) `max-batches`, `max-memory`, `max-age` and `boot-timeout` (a
//! `kind = "http"` table is `http`'s). Only its shape is read here; whether its program can be
//! started is `probe`'s business (for `check-config`), since a missing program fails each
//! message at run time rather than the start.

use super::chorefile::RawKey;
use super::error::Origin;
use super::options::HANDLER_KEYS;
use super::value::toml_type;
use super::{Handler, HandlerMode, Preload, suggest};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `["cmd", "arg"]` (per-message mode) or
/// `{ command = [...], mode = "batch", env = {...}, dir = "..." }`, with the preload keys
/// when `mode = "preload"`. A relative `dir` (and the default one) is the directory of the
/// Chorefile that wrote the key.
pub fn handler_of(raw: &RawKey, origin: &Origin) -> Result<Handler, String> {
    let mut h = match &raw.value {
        toml::Value::Array(_) => Handler {
            command: argv(&raw.value)?,
            ..blank()
        },
        toml::Value::Table(t) => from_table(t)?,
        other => {
            return Err(format!(
                "expected the command as a list of strings (argv; no shell is used) or a handler table, found {}",
                toml_type(other)
            ));
        }
    };
    let base = origin.base_dir();
    h.dir = Some(match h.dir.take() {
        Some(d) if d.is_absolute() => d,
        Some(d) => base.join(d),
        None => base,
    });
    Ok(h)
}

fn blank() -> Handler {
    Handler {
        command: Vec::new(),
        mode: HandlerMode::Message,
        env: BTreeMap::new(),
        dir: None,
        preload: None,
    }
}

/// The keys that only a preloaded handler takes.
const PRELOAD_KEYS: [&str; 4] = ["max-batches", "max-memory", "max-age", "boot-timeout"];

/// A handler table: each key read by its own rule, then the rules between keys (a command
/// is required; the preload keys only go with `mode = "preload"`).
fn from_table(t: &toml::Table) -> Result<Handler, String> {
    let mut h = blank();
    let mut preload = Preload {
        max_batches: None,
        max_age: None,
        max_memory: None,
        boot_timeout: Duration::from_secs(120),
        socket: None,
    };
    let mut preload_keys = Vec::new();
    for (k, v) in t {
        match k.as_str() {
            "command" => h.command = argv(v)?,
            // Written out for symmetry with `kind = "http"`.
            "kind" if v.as_str() == Some("command") => {}
            "kind" => return Err(format!("kind must be \"command\" or \"http\", found {v}")),
            "mode" => h.mode = mode(v)?,
            "env" => h.env = env(v)?,
            "dir" => h.dir = Some(PathBuf::from(v.as_str().ok_or("dir must be a string")?)),
            "max-batches" => preload.max_batches = Some(count(k, v)?),
            "max-memory" => preload.max_memory = Some(count(k, v)?),
            "max-age" => preload.max_age = Some(seconds(k, v)?),
            "boot-timeout" => preload.boot_timeout = seconds(k, v)?,
            other => {
                return Err(format!(
                    "unknown handler key `{other}`{} (known: {})",
                    suggest::hint(other, HANDLER_KEYS.iter().copied()),
                    HANDLER_KEYS.join(", ")
                ));
            }
        }
        if PRELOAD_KEYS.contains(&k.as_str()) {
            preload_keys.push(k.as_str());
        }
    }
    if h.command.is_empty() {
        return Err("the handler table needs a command".into());
    }
    if let (false, Some(k)) = (h.mode == HandlerMode::Preload, preload_keys.first()) {
        return Err(format!("`{k}` applies only to mode = \"preload\""));
    }
    if h.mode == HandlerMode::Preload {
        h.preload = Some(preload);
    }
    Ok(h)
}

fn mode(v: &toml::Value) -> Result<HandlerMode, String> {
    match v.as_str() {
        Some("message") => Ok(HandlerMode::Message),
        Some("batch") => Ok(HandlerMode::Batch),
        Some("preload") => Ok(HandlerMode::Preload),
        _ => Err(format!(
            "mode must be \"message\", \"batch\" or \"preload\", found {v}"
        )),
    }
}

/// `env = { NAME = "value" }`: only what a process can be started with, or every message
/// would fail.
fn env(v: &toml::Value) -> Result<BTreeMap<String, String>, String> {
    let toml::Value::Table(env) = v else {
        return Err("env must be a table of strings".into());
    };
    let mut out = BTreeMap::new();
    for (name, val) in env {
        let val = val
            .as_str()
            .ok_or_else(|| format!("env.{name} must be a string"))?;
        if name.is_empty() || name.contains(['=', '\0']) || val.contains('\0') {
            return Err(format!(
                "env.{name:?}: a variable's name must be non-empty without `=` or NUL, and its value without NUL"
            ));
        }
        out.insert(name.clone(), val.to_owned());
    }
    Ok(out)
}

/// A whole number ≥ 1.
fn count(key: &str, v: &toml::Value) -> Result<u64, String> {
    match v.as_integer() {
        Some(n) if n >= 1 => Ok(n as u64),
        _ => Err(format!("{key} must be a whole number ≥ 1, found {v}")),
    }
}

/// Seconds > 0.
fn seconds(key: &str, v: &toml::Value) -> Result<Duration, String> {
    let s = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(x) => *x,
        _ => f64::NAN,
    };
    if !(s > 0.0 && s <= super::MAX_SECONDS) {
        return Err(format!("{key} must be a number of seconds > 0, found {v}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn argv(v: &toml::Value) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = v else {
        return Err(format!(
            "expected the command as a list of strings (argv; no shell is used), found {}",
            toml_type(v)
        ));
    };
    let argv: Vec<String> = items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or("every element of the command must be a string")
        })
        .collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("the command is empty".into());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(
            "an element of the command contains NUL: no program can be started with it".into(),
        );
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read(value: &str) -> Result<Handler, String> {
        let value: toml::Table = toml::from_str(&format!("h = {value}")).unwrap();
        let raw = RawKey {
            value: value["h"].clone(),
            origin: Origin::file(Path::new("/srv/app/Chorefile"), Some(1)),
            inner: BTreeMap::new(),
        };
        handler_of(&raw, &raw.origin)
    }

    #[test]
    fn both_forms_are_read_with_the_chorefile_directory() {
        let h = read("[\"./send\", \"-f\"]").unwrap();
        assert_eq!((h.command.len(), h.mode), (2, HandlerMode::Message));
        assert_eq!(h.dir.as_deref(), Some(Path::new("/srv/app")));
        let h = read("{ command = [\"w\"], mode = \"batch\", env = { A = \"1\" }, dir = \"bin\" }")
            .unwrap();
        assert_eq!((h.mode, h.env["A"].as_str()), (HandlerMode::Batch, "1"));
        assert_eq!(h.dir.as_deref(), Some(Path::new("/srv/app/bin")));
    }

    #[test]
    fn a_malformed_handler_says_what_is_wrong() {
        assert!(
            read("\"x y\"")
                .unwrap_err()
                .ends_with("or a handler table, found a string")
        );
        assert_eq!(read("[]").unwrap_err(), "the command is empty");
        assert_eq!(
            read("[1]").unwrap_err(),
            "every element of the command must be a string"
        );
        assert!(read("[\"x\", \"a\\u0000b\"]").unwrap_err().contains("NUL"));
        assert!(
            read("{ command = [\"x\"], env = { A = \"1\\u0000\" } }")
                .unwrap_err()
                .contains("NUL")
        );
        assert_eq!(
            read("{ mode = \"batch\" }").unwrap_err(),
            "the handler table needs a command"
        );
        assert_eq!(
            read("{ command = [\"x\"], mode = \"bulk\" }").unwrap_err(),
            "mode must be \"message\", \"batch\" or \"preload\", found \"bulk\""
        );
        assert_eq!(
            read("{ command = [\"x\"], mod = 1 }").unwrap_err(),
            "unknown handler key `mod` (did you mean `mode`?) (known: command, mode, env, dir, kind, max-batches, max-age, max-memory, boot-timeout)"
        );
    }
}
