//! The `chore` binary. A worker child (`chore work`) skips argument parsing and logging
//! set-up entirely: it starts once per batch, so its start-up is on the hot path.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "work") {
        std::process::exit(chore::run_worker());
    }
    std::process::exit(chore::run_cli());
}
