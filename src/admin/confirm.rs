//! Asking before destroying: the question goes to standard error, the answer is one line
//! of standard input, and only `y` or `yes` goes ahead (end of input refuses).

use super::{Fail, Outcome};
use std::io::BufRead;

/// Ask `question`; Err (exit 1, nothing done) unless the answer is yes. `yes` skips it.
pub fn confirm(question: &str, yes: bool) -> Outcome {
    if yes {
        return Ok(());
    }
    crate::logging::stderr_line(&format!("{question} [y/N]"));
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Fail::Failed(
            "not confirmed; nothing was changed (--yes skips the question)".into(),
        )),
    }
}
