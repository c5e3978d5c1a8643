//! A handler as written in a queue table: `["cmd", "arg"]`, or a table with `command`,
//! `mode`, `env` and `dir`. Only its shape is read here; whether its program can be
//! started is `probe`'s business (for `check-config`), since a missing program fails each
//! message at run time rather than the start.

use super::chorefile::RawKey;
use super::error::Origin;
use super::options::HANDLER_KEYS;
use super::value::toml_type;
use super::{Handler, HandlerMode, suggest};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `["cmd", "arg"]` (per-message mode) or
/// `{ command = [...], mode = "batch", env = {...}, dir = "..." }`. A relative `dir` (and
/// the default one) is the directory of the Chorefile that wrote the key.
pub fn handler_of(raw: &RawKey, origin: &Origin) -> Result<Handler, String> {
    let mut h = Handler {
        command: Vec::new(),
        mode: HandlerMode::Message,
        env: BTreeMap::new(),
        dir: None,
    };
    match &raw.value {
        toml::Value::Array(_) => h.command = argv(&raw.value)?,
        toml::Value::Table(t) => {
            for (k, v) in t {
                match k.as_str() {
                    "command" => h.command = argv(v)?,
                    // Written out for symmetry with `kind = "http"`.
                    "kind" if v.as_str() == Some("command") => {}
                    "kind" => {
                        return Err(format!("kind must be \"command\" or \"http\", found {v}"));
                    }
                    "mode" => {
                        h.mode = match v.as_str() {
                            Some("message") => HandlerMode::Message,
                            Some("batch") => HandlerMode::Batch,
                            _ => {
                                return Err(format!(
                                    "mode must be \"message\" or \"batch\", found {v}"
                                ));
                            }
                        }
                    }
                    "env" => {
                        let toml::Value::Table(env) = v else {
                            return Err("env must be a table of strings".into());
                        };
                        for (name, val) in env {
                            let val = val
                                .as_str()
                                .ok_or_else(|| format!("env.{name} must be a string"))?;
                            h.env.insert(name.clone(), val.to_owned());
                        }
                    }
                    "dir" => h.dir = Some(PathBuf::from(v.as_str().ok_or("dir must be a string")?)),
                    other => {
                        return Err(format!(
                            "unknown handler key `{other}`{} (known: {})",
                            suggest::hint(other, HANDLER_KEYS.iter().copied()),
                            HANDLER_KEYS.join(", ")
                        ));
                    }
                }
            }
            if h.command.is_empty() {
                return Err("the handler table needs a command".into());
            }
        }
        other => {
            return Err(format!(
                "expected the command as a list of strings (argv; no shell is used) or a handler table, found {}",
                toml_type(other)
            ));
        }
    }
    let base = origin.base_dir();
    h.dir = Some(match h.dir.take() {
        Some(d) if d.is_absolute() => d,
        Some(d) => base.join(d),
        None => base,
    });
    Ok(h)
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
        assert_eq!(
            read("{ mode = \"batch\" }").unwrap_err(),
            "the handler table needs a command"
        );
        assert_eq!(
            read("{ command = [\"x\"], mode = \"bulk\" }").unwrap_err(),
            "mode must be \"message\" or \"batch\", found \"bulk\""
        );
        assert_eq!(
            read("{ command = [\"x\"], mod = 1 }").unwrap_err(),
            "unknown handler key `mod` (did you mean `mode`?) (known: command, mode, env, dir, kind)"
        );
    }
}
