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
}
