//! `chore status`: ask the running master over its control socket and print the answer,
//! as text or (`--json`) as the JSON line it sent. Exit status: 0 healthy, 3 unhealthy,
//! 1 when no master answered.

use super::status::{Snapshot, render};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Ask the master at `socket`; print; return the exit status.
pub fn run(socket: &Path, json: bool) -> i32 {
    match ask(socket) {
        Ok((line, snapshot)) => {
            if json {
                println!("{line}");
            } else {
                print!("{}", render(&snapshot));
            }
            if snapshot.healthy { 0 } else { 3 }
        }
        Err(e) => {
            eprintln!("chore status: {}: {e}", socket.display());
            1
        }
    }
}

fn ask(socket: &Path) -> Result<(String, Snapshot), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!("no master answers here ({e}); is chore running, and is this its control-socket?")
    })?;
    let patience = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(patience)
        .map_err(|e| e.to_string())?;
    stream.write_all(b"status\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    let line = answer.trim_end().to_string();
    match serde_json::from_str::<Snapshot>(&line) {
        Ok(s) => Ok((line, s)),
        Err(_) => Err(format!("the master said: {line}")),
    }
}
