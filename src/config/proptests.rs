//! Property tests of the Chorefile readers over arbitrary input: TOML and Ruby Chore's
//! format never panic, and every mistake they report names the file and a line.

use super::chorefile;
use super::options::OPTIONS;
use proptest::prelude::*;
use std::path::PathBuf;

/// Pieces Chorefiles are made of, so that generated text reaches past the first syntax
/// error into keys, values and queue tables.
fn fragment() -> impl Strategy<Value = String> {
    let key = (0..OPTIONS.len()).prop_map(|i| OPTIONS[i].key.to_string());
    let value = prop_oneof![
        Just("1".to_string()),
        Just("-5".to_string()),
        Just("9223372036854775807".to_string()),
        Just("0.0".to_string()),
        Just("\"x\"".to_string()),
        Just("\"\"".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("true".to_string()),
        Just("{ a = 1 }".to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k} = {v}\n")),
        (key.clone(), value).prop_map(|(k, v)| format!("--{k} {v}\n")),
        key.prop_map(|k| format!("-{k}\n")),
        "[a-z. ]{0,12}".prop_map(|q| format!("[queues.{q}]\n")),
        Just("[queues.q.classes]\nA = [\"true\"]\n".to_string()),
        Just("handler = [\"true\"]\n".to_string()),
        Just("# comment\n\n".to_string()),
        Just("\u{feff}".to_string()),
        Just("<% x %>\n".to_string()),
        any::<String>(),
    ]
}

fn chorefile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..12).prop_map(|v| v.concat())
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("chore-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn names_file_and_line(
    path: &std::path::Path,
    errors: &[super::error::ConfigError],
) -> Result<(), TestCaseError> {
    for e in errors {
        let shown = e.to_string();
        prop_assert!(e.line().is_some(), "no line: {shown}");
        prop_assert!(
            shown.contains(&path.display().to_string()),
            "no file: {shown}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_chorefile_never_panics_and_each_error_has_file_and_line(text in chorefile_text()) {
        let path = write("Chorefile", text.as_bytes());
        let (_, errors) = chorefile::read(&path);
        let _ = std::fs::remove_file(&path);
        names_file_and_line(&path, &errors)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_each_error_has_file_and_line(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let path = write("Bytes", &bytes);
        let (_, errors) = chorefile::read(&path);
        let _ = std::fs::remove_file(&path);
        names_file_and_line(&path, &errors)?;
    }

    #[test]
    fn a_ruby_chorefile_never_panics_and_each_error_has_file_and_line(text in chorefile_text()) {
        let path = PathBuf::from("/nowhere/Chorefile.rb");
        let (_, errors) = super::ruby::read(&path, &format!("--\n{text}"));
        names_file_and_line(&path, &errors)?;
    }
}
