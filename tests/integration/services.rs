//! Real services for the tests that need them: memcached (dedupe) and moto_server (SQS),
//! each started on a free loopback port and stopped when dropped.
//!
//! Their paths come from `CHORE_TEST_MEMCACHED` and `CHORE_TEST_MOTO_SERVER` (set by
//! `scripts/test.sh`), else `memcached` on PATH and `.venv/bin/moto_server`. A service
//! that cannot start fails the test loudly: a test never skips quietly.

// The helpers serve later issues' tests too; today only the smoke tests call some of them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running service; killed when dropped.
pub struct Service {
    child: Child,
    pub name: &'static str,
    pub port: u16,
    log: PathBuf,
}

impl Service {
    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (for moto: the AWS endpoint URL).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the service printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn memcached_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CHORE_TEST_MEMCACHED").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let p = dir.join("memcached");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/bin/memcached")
}

fn moto_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CHORE_TEST_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

/// Start `program args` (with `{port}` in args replaced) and wait until the port accepts
/// connections; panic with what it printed if it does not.
fn start(
    name: &'static str,
    program: PathBuf,
    args: &[&str],
    patience: Duration,
    install_hint: &str,
) -> Service {
    start_with(name, program, args, patience, install_hint, None, &[])
}

/// `start`, on `fixed_port` when given (else a free one), with extra environment.
fn start_with(
    name: &'static str,
    program: PathBuf,
    args: &[&str],
    patience: Duration,
    install_hint: &str,
    fixed_port: Option<u16>,
    env: &[(&str, &str)],
) -> Service {
    assert!(
        program.is_file(),
        "{name} is needed by this test but {} does not exist; {install_hint}",
        program.display()
    );
    for _attempt in 0..3 {
        let port = fixed_port.unwrap_or_else(free_port);
        let log =
            std::env::temp_dir().join(format!("chore-it-{name}-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(&program)
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {name} ({}): {e}; {install_hint}",
                    program.display()
                )
            });
        let mut svc = Service {
            child,
            name,
            port,
            log,
        };
        let start = Instant::now();
        loop {
            if TcpStream::connect(svc.addr()).is_ok() {
                return svc;
            }
            if let Ok(Some(status)) = svc.child.try_wait() {
                let output = svc.output();
                // Someone took the port between our probe and its bind: try another.
                if output.contains("in use") && fixed_port.is_none() {
                    break;
                }
                panic!(
                    "{name} ({}) exited with {status} before listening on port {port}:\n{output}",
                    program.display()
                );
            }
            if start.elapsed() > patience {
                panic!(
                    "{name} ({}) did not listen on port {port} within {patience:?}:\n{}",
                    program.display(),
                    svc.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{name}: could not find a free port in three tries");
}

/// memcached on a free loopback port (UDP off, 64 MB).
pub fn memcached() -> Service {
    let mut args = Vec::new();
    if is_root() {
        // memcached refuses to run as root unless told which user to be.
        args.extend(["-u", "root"]);
    }
    args.extend(["-l", "127.0.0.1", "-p", "{port}", "-U", "0", "-m", "64"]);
    start(
        "memcached",
        memcached_path(),
        &args,
        Duration::from_secs(10),
        "install it with `apt-get install -y memcached` or run scripts/test.sh",
    )
}

const MOTO_HINT: &str = "install it with `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'` \
     or run scripts/test.sh";

/// moto_server (an SQS emulator) on a free loopback port.
pub fn moto() -> Service {
    moto_with(None, &[])
}

/// moto_server on `port` (to restart it where a client expects it: moto keeps no state
/// across restarts), or a free port, with extra environment (`MOTO_RECORDER_FILEPATH`).
pub fn moto_with(port: Option<u16>, env: &[(&str, &str)]) -> Service {
    start_with(
        "moto_server",
        moto_path(),
        &["-H", "127.0.0.1", "-p", "{port}"],
        Duration::from_secs(60),
        MOTO_HINT,
        port,
        env,
    )
}

/// Send `request` and read until the peer closes or `until` appears in the reply.
pub fn exchange(addr: &str, request: &[u8], until: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&reply).contains(until) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn memcached_starts_and_answers() {
    let mc = memcached();
    let reply = exchange(&mc.addr(), b"version\r\n", "\r\n");
    assert!(reply.starts_with("VERSION "), "memcached said {reply:?}");
    // add: the dedupe primitive (a second add of the same key fails).
    let reply = exchange(&mc.addr(), b"add chore-k 0 60 1\r\nx\r\n", "\r\n");
    assert_eq!(reply, "STORED\r\n");
    let reply = exchange(&mc.addr(), b"add chore-k 0 60 1\r\nx\r\n", "\r\n");
    assert_eq!(reply, "NOT_STORED\r\n");
}

#[test]
fn moto_server_starts_and_answers() {
    let moto = moto();
    let reply = exchange(
        &moto.addr(),
        b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1."), "moto said {reply:?}");
}
