//! The master's AWS secrets: read once from the environment chore started with, then kept
//! from its children. A handler knows the master's pid (`CHORE_MASTER_PID`), and
//! `/proc/<pid>/environ` shows a process's *original* environment block whatever became of
//! its environment since, so `hide_secrets` blanks the values there too. The copy kept here
//! is what the SQS client (`environment_credentials`, a static provider) and a queue with
//! `pass-aws-credentials` (`launch::pass_credentials`) use.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// The AWS credential variables this process started with, read once: the master hides
/// the secret ones from its own environment (`hide_secrets`), and this copy is what the
/// SQS client and a queue with `pass-aws-credentials` still use.
static STARTED_WITH: OnceLock<Vec<(OsString, OsString)>> = OnceLock::new();

pub fn started_with() -> &'static [(OsString, OsString)] {
    STARTED_WITH.get_or_init(|| {
        std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_some_and(is_credential))
            .collect()
    })
}

/// Environment variables that carry AWS credentials, or lead to them: keys and tokens, the
/// ECS and EKS credential sources, and the profile settings.
pub fn is_credential(name: &str) -> bool {
    const NAMES: [&str; 12] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ];
    name.starts_with("AWS_SECRET") || NAMES.contains(&name)
}

/// The static credentials of the environment this process started with: key id, secret
/// and session token (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` or
/// the older `AWS_SECURITY_TOKEN`), as the SDK's environment provider reads them.
pub fn environment_credentials() -> Option<(String, String, Option<String>)> {
    let get = |name: &str| {
        started_with()
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str())
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    let token = get("AWS_SESSION_TOKEN").or_else(|| get("AWS_SECURITY_TOKEN"));
    Some((
        get("AWS_ACCESS_KEY_ID")?,
        get("AWS_SECRET_ACCESS_KEY")?,
        token,
    ))
}

/// Variables whose value is a secret the SQS client takes from `environment_credentials`
/// (so never re-reads from the environment): hidden by `hide_secrets`. The other
/// credential variables name where credentials are (a profile, a file, a URI) and the SDK
/// reads them again on each refresh, so they stay; workers and hooks never get them.
fn is_hidden_secret(name: &str) -> bool {
    name.starts_with("AWS_SECRET")
        || [
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ]
        .contains(&name)
}

/// Hide this process's secret AWS variables from anyone who reads
/// `/proc/<pid>/environ` (a handler knows the master's pid): remove them from the
/// environment, then blank their values in the original environment block, which is what
/// `/proc/<pid>/environ` shows whatever the environment became. Returns the names hidden.
/// Call it while the process has one thread (`remove_var` is not thread-safe), after which
/// the secrets live only in `STARTED_WITH`.
pub fn hide_secrets() -> std::io::Result<Vec<String>> {
    let names: Vec<&OsString> = started_with()
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.to_str().is_some_and(is_hidden_secret))
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    for k in &names {
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::remove_var(k) };
    }
    let (start, end) = environment_block()?;
    // SAFETY: [start, end) is this process's original environment block, mapped and
    // writable (the top of the initial stack). With the variables removed above, nothing
    // refers to their strings any more, and blanking bytes cannot move anything.
    let block = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    let bytes: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
    blank_values(block, &bytes);
    Ok(names
        .iter()
        .map(|k| k.to_string_lossy().into_owned())
        .collect())
}

/// Where the original environment block lies: fields 50 and 51 (`env_start`, `env_end`)
/// of `/proc/self/stat`.
fn environment_block() -> std::io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || std::io::Error::other("/proc/self/stat has no environment block");
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> std::io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(bad)
    };
    let (start, end) = (field(50)?, field(51)?);
    if start == 0 || end <= start {
        return Err(bad());
    }
    Ok((start, end))
}

/// In `block`, NUL-separated `NAME=VALUE` entries, overwrite with NULs the value of each
/// entry whose name is in `names`. Returns how many values it blanked.
fn blank_values(block: &mut [u8], names: &[&[u8]]) -> usize {
    let mut blanked = 0;
    let mut at = 0;
    while at < block.len() {
        let len = block[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(block.len() - at);
        let entry = &mut block[at..at + len];
        if let Some(eq) = entry.iter().position(|&b| b == b'=')
            && names.contains(&&entry[..eq])
        {
            entry[eq + 1..].fill(0);
            blanked += 1;
        }
        at += len + 1;
    }
    blanked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_recognised() {
        for name in ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"] {
            assert!(is_credential(name), "{name}");
        }
        for name in ["AWS_REGION", "AWS_ENDPOINT_URL", "PATH"] {
            assert!(!is_credential(name), "{name}");
        }
    }

    #[test]
    fn only_the_named_values_are_blanked_in_place() {
        let mut block = b"PATH=/bin\0AWS_SECRET_ACCESS_KEY=s3cr3t\0AWS_SECRET_ACCESS_KEY_X=k\0A=AWS_SESSION_TOKEN=t\0AWS_SESSION_TOKEN=tok"
            .to_vec();
        let len = block.len();
        let n = blank_values(
            &mut block,
            &[b"AWS_SECRET_ACCESS_KEY", b"AWS_SESSION_TOKEN"],
        );
        assert_eq!(n, 2);
        assert_eq!(block.len(), len, "nothing moves");
        assert_eq!(
            block,
            b"PATH=/bin\0AWS_SECRET_ACCESS_KEY=\0\0\0\0\0\0\0AWS_SECRET_ACCESS_KEY_X=k\0A=AWS_SESSION_TOKEN=t\0AWS_SESSION_TOKEN=\0\0\0"
        );
    }

    #[test]
    fn the_environment_block_is_found() {
        let (start, end) = environment_block().unwrap();
        assert!(end > start);
    }
}
