//! A server program (memcached, moto) run on a loopback port for a test or the bench:
//! started, waited for until it accepts connections, killed when dropped. It can be
//! stopped and started again on the same port, for an outage and a recovery.
//!
//! A program that is missing or cannot start fails loudly, with how to install it: a test
//! never skips quietly. What the program prints goes to a log file in the temporary
//! directory, shown when it fails and removed when the service is dropped.

use super::poll::poll_until;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to run a server program.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub program: PathBuf,
    /// Arguments; `{port}` stands for the port.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How long it may take to start listening.
    pub patience: Duration,
    /// Said when the program is missing or fails.
    pub install_hint: &'static str,
}

/// A running (or stopped) server program.
pub struct Service {
    spec: Spec,
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

impl Service {
    /// Start on a free port; on another one should someone take the port before the
    /// program binds it.
    pub fn start(spec: Spec) -> Service {
        for _ in 0..3 {
            let mut svc = Service::stopped(spec.clone(), free_port());
            match svc.spawn() {
                Ok(()) => return svc,
                Err(out) if out.contains("in use") => continue,
                Err(out) => svc.fail(&out),
            }
        }
        panic!("{}: could not find a free port in three tries", spec.name);
    }

    /// Start on `port` (where a client expects it), waiting while the port is still held.
    pub fn start_on(spec: Spec, port: u16) -> Service {
        let mut svc = Service::stopped(spec, port);
        svc.restart();
        svc
    }

    fn stopped(spec: Spec, port: u16) -> Service {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "chore-svc-{}-{}-{port}-{}.log",
            spec.name,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        Service {
            spec,
            port,
            log,
            child: None,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (for moto: the AWS endpoint URL).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the program printed since it was last started.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill the program (an outage): connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            TcpStream::connect(self.addr()).is_err(),
            "{} still answers on port {} after it was stopped",
            self.spec.name,
            self.port
        );
    }

    /// Start it again on the same port, empty (neither memcached nor moto keeps anything
    /// across restarts), waiting while something still holds the port.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart a {} that is stopped",
            self.spec.name
        );
        let mut last = String::new();
        let started = poll_until(self.spec.patience, || match self.spawn() {
            Ok(()) => true,
            Err(out) if out.contains("in use") => {
                last = out;
                false
            }
            Err(out) => self.fail(&out),
        });
        if !started {
            self.fail(&format!("the port stayed in use:\n{last}"));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "{} ({}) did not start on port {}: {why}",
            self.spec.name,
            self.spec.program.display(),
            self.port
        )
    }

    /// Start the program on `self.port` and wait until it accepts connections; Err with
    /// what it printed if it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let spec = &self.spec;
        assert!(
            spec.program.is_file(),
            "{} is needed here but {} does not exist; {}",
            spec.name,
            spec.program.display(),
            spec.install_hint
        );
        let out = std::fs::File::create(&self.log).unwrap();
        let port = self.port.to_string();
        let mut child = Command::new(&spec.program)
            .args(spec.args.iter().map(|a| a.replace("{port}", &port)))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}; {}",
                    spec.name,
                    spec.program.display(),
                    spec.install_hint
                )
            });
        let addr = self.addr();
        let mut exited = None;
        let listening = poll_until(spec.patience, || {
            if TcpStream::connect(&addr).is_ok() {
                return true;
            }
            exited = child.try_wait().ok().flatten();
            exited.is_some()
        });
        match exited {
            Some(status) => Err(format!("exited with {status}:\n{}", self.output())),
            None if listening => {
                self.child = Some(child);
                Ok(())
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "not listening after {:?}:\n{}",
                    spec.patience,
                    self.output()
                ))
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A program's path: the environment variable `var` when set, else `on_path` found on
/// PATH (when given), else `fallback`.
pub fn program_path(var: &str, on_path: Option<&str>, fallback: PathBuf) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let Some(name) = on_path else {
        return fallback;
    };
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or(fallback)
}
