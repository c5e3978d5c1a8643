//! Link the `chore` binary as a position-dependent executable.
//!
//! Every batch re-executes this binary as a worker, so its start-up cost is paid per
//! batch. As a PIE, the loader must relocate ~700 KB of pointer tables (mostly the AWS
//! SDK's) in every new process, dirtying ~170 pages; linked without PIE those addresses
//! are fixed at link time and the pages are shared and untouched. See
//! docs/decisions/0003-worker-start-up.md.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        // The benchmark re-executes itself as the no-op handler of every batch: the same
        // reasoning applies to it.
        println!("cargo:rustc-link-arg-benches=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
    version::emit();
}

/// `chore --version` names the git revision it was built from (`0.1.0 (1a2b3c4)`, with
/// `-dirty` for uncommitted changes to tracked files), or only the package version when
/// built outside a checkout or without git (from a crate tarball, say).
mod version {
    use std::process::Command;

    fn git(args: &[&str]) -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_string())
    }

    pub fn emit() {
        let package = env!("CARGO_PKG_VERSION");
        let version = match git(&["rev-parse", "--short", "HEAD"]) {
            Some(rev) if !rev.is_empty() => {
                // Build again when HEAD moves (a checkout, a commit on the branch), when the
                // index changes, or when a source changes (which may make it dirty). In a
                // worktree these files are not under ./.git: ask git where they are.
                // A branch's ref may be packed (as after a clone): a missing file would make
                // cargo run this script at every build, so watch packed-refs then.
                let path = |name: &str| git(&["rev-parse", "--git-path", name]);
                let branch = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| path(&r));
                let branch = match branch {
                    Some(p) if std::path::Path::new(&p).exists() => Some(p),
                    Some(_) => path("packed-refs"),
                    None => None,
                };
                for p in [path("HEAD"), path("index"), branch].into_iter().flatten() {
                    println!("cargo:rerun-if-changed={p}");
                }
                println!("cargo:rerun-if-changed=src");
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                format!("{package} ({rev}{})", if dirty { "-dirty" } else { "" })
            }
            _ => package.to_string(),
        };
        println!("cargo:rustc-env=CHORE_VERSION={version}");
    }
}
