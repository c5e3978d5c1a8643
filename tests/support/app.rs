//! The test application for chore's HTTP handler mode (`tests/support/http_app.py`), run
//! as a process on a loopback port: started (on a free port, on a given one, or "booting":
//! refusing connections until told to listen), stopped and restarted on its port, told how
//! to answer (rules: status, delay, `Retry-After`, trickled bytes), and asked what it
//! received.
//!
//! Every request the app receives is a `Request` with the headers as sent, the body byte
//! for byte, the peer and the connection that carried it; when it has answered, an
//! `Answer`. Both are read back from the JSON lines it appends to `<dir>/<label>.jsonl`,
//! so a failing test's directory still holds them.
//!
//! The app is Python's standard library only: `python3` on PATH (or
//! `CHORE_TEST_PYTHON`) is all it needs.

use super::http::{base64_decode, exchange};
use super::poll::poll_until;
use super::service::program_path;
use serde_json::Value;
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the app may take to start listening.
const BOOT_PATIENCE: Duration = Duration::from_secs(20);

/// One request as the app received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which app process (a restart is another) and its request number there.
    pub pid: u64,
    pub n: u64,
    /// The connection that carried it (numbered per app process).
    pub conn: u64,
    /// Arrival, seconds since the epoch.
    pub at: f64,
    pub method: String,
    /// As on the request line (query included).
    pub path: String,
    /// `HTTP/1.1`
    pub version: String,
    /// In order, names spelled as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The peer's address (without its port).
    pub peer: String,
    /// Requests in flight at the app when this one arrived, itself included.
    pub inflight: u64,
}

impl Request {
    /// The value of header `name` (any case); None when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers are named `name` (any case).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    /// `X-Aws-Sqsd-Msgid`, or "".
    pub fn msgid(&self) -> &str {
        self.header("X-Aws-Sqsd-Msgid").unwrap_or("")
    }

    /// `X-Aws-Sqsd-Receive-Count` as a number (0 when absent or not a number).
    pub fn receive_count(&self) -> u32 {
        self.header("X-Aws-Sqsd-Receive-Count")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Is this a periodic-task request (it names a task)?
    pub fn is_periodic(&self) -> bool {
        self.header("X-Aws-Sqsd-Taskname").is_some()
    }
}

/// The app's answer to a request, once written (or once writing it failed).
#[derive(Debug, Clone)]
pub struct Answer {
    pub pid: u64,
    pub n: u64,
    pub at: f64,
    pub status: u16,
    /// False when the client was gone before the answer was written.
    pub ok: bool,
}

/// The test application; killed when dropped.
pub struct App {
    dir: PathBuf,
    label: String,
    pub port: u16,
    rules: RefCell<Value>,
    child: Option<Child>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/http_app.py")
}

fn python() -> PathBuf {
    program_path(
        "CHORE_TEST_PYTHON",
        Some("python3"),
        PathBuf::from("/usr/bin/python3"),
    )
}

impl App {
    /// On a free loopback port (the app picks it), answering by `rules` (see
    /// `http_app.py`; `json!({})`: 200 to everything). Logs under `dir` as `label`.
    pub fn start(dir: &Path, label: &str, rules: Value) -> App {
        let mut app = App::stopped(dir, label, 0, rules);
        app.spawn(None);
        app
    }

    /// On `port` (where chore already expects it).
    pub fn start_on(dir: &Path, label: &str, port: u16, rules: Value) -> App {
        let mut app = App::stopped(dir, label, port, rules);
        app.spawn(None);
        app
    }

    /// A process that will listen on `port` but refuses connections until `finish_booting`:
    /// an application still starting up.
    pub fn booting(dir: &Path, label: &str, port: u16, rules: Value) -> App {
        let mut app = App::stopped(dir, label, port, rules);
        let flag = app.boot_flag();
        let _ = std::fs::remove_file(&flag);
        app.child = Some(app.command(Some(&flag)).spawn().expect("python3 starts"));
        app
    }

    /// Let a `booting` app listen, and wait until it does.
    pub fn finish_booting(&mut self) {
        std::fs::write(self.boot_flag(), b"").unwrap();
        self.await_port();
    }

    fn stopped(dir: &Path, label: &str, port: u16, rules: Value) -> App {
        App {
            dir: dir.to_path_buf(),
            label: label.to_owned(),
            port,
            rules: RefCell::new(rules),
            child: None,
        }
    }

    fn boot_flag(&self) -> PathBuf {
        self.dir.join(format!("{}.booted", self.label))
    }

    /// The request log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.jsonl", self.label))
    }

    fn command(&self, listen_after: Option<&Path>) -> Command {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.err", self.label)))
            .unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["--port", &self.port.to_string()])
            .arg("--log")
            .arg(self.log_path())
            .args(["--rules", &self.rules.borrow().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        if let Some(flag) = listen_after {
            cmd.arg("--listen-after").arg(flag);
        }
        cmd
    }

    fn spawn(&mut self, listen_after: Option<&Path>) {
        self.child = Some(self.command(listen_after).spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); it needs python3 on PATH",
                script().display()
            )
        }));
        self.await_port();
    }

    /// Read the port the app prints once it listens, and check it accepts connections.
    fn await_port(&mut self) {
        let out = self.child.as_mut().unwrap().stdout.take().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the test app did not start: {:?}; stderr:\n{}",
                line,
                std::fs::read_to_string(self.dir.join(format!("{}.err", self.label)))
                    .unwrap_or_default()
            )
        });
        assert!(
            self.port == 0 || self.port == port,
            "asked for {}",
            self.port
        );
        self.port = port;
        let addr = self.addr();
        assert!(
            poll_until(BOOT_PATIENCE, || TcpStream::connect(&addr).is_ok()),
            "the test app does not accept connections on {addr}"
        );
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT<path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Kill the app: connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port, with the rules last set.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(None);
    }

    /// Answer by `rules` from now on (counts of `times` start again).
    pub fn set_rules(&self, rules: Value) {
        let (status, body) = exchange(
            &self.addr(),
            "POST",
            "/__control",
            &[("Content-Type", "application/json")],
            rules.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        *self.rules.borrow_mut() = rules;
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            // A line being written is not whole yet: skip it until it is.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.lines()
            .iter()
            .filter(|v| v.get("answered").is_none())
            .map(parse_request)
            .collect()
    }

    /// The requests that carried message `id` (`X-Aws-Sqsd-Msgid`).
    pub fn requests_for(&self, id: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.msgid() == id)
            .collect()
    }

    /// Every answer written (or attempted) so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.lines()
            .iter()
            .filter(|v| v.get("answered").is_some())
            .map(|v| Answer {
                pid: v["pid"].as_u64().unwrap_or(0),
                n: v["answered"].as_u64().unwrap(),
                at: v["at"].as_f64().unwrap(),
                status: v["status"].as_u64().unwrap() as u16,
                ok: v["ok"].as_bool().unwrap(),
            })
            .collect()
    }

    /// The answer to `req`, if given yet.
    pub fn answer_to(&self, req: &Request) -> Option<Answer> {
        self.answers()
            .into_iter()
            .find(|a| a.pid == req.pid && a.n == req.n)
    }
}

fn parse_request(v: &Value) -> Request {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Request {
        pid: v["pid"].as_u64().unwrap_or(0),
        n: v["n"].as_u64().unwrap(),
        conn: v["conn"].as_u64().unwrap(),
        at: v["at"].as_f64().unwrap(),
        method: s("method"),
        path: s("path"),
        version: s("version"),
        headers: v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_owned(),
                    h[1].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
        body: base64_decode(v["body"].as_str().unwrap_or_default()),
        peer: v["peer"][0].as_str().unwrap_or_default().to_owned(),
        inflight: v["inflight"].as_u64().unwrap_or(0),
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}
