//! Asking a preloader to fork a batch (docs/handlers.md, "Preloaded mode").
//!
//! The worker makes the batch's two pipes, connects to the ready preloader's socket (the
//! master names it in the batch spec), and sends one message: the line
//! `{"pgid":…,"messages":…}` with the input's read end, the output's write end and the log
//! (the write end of a pipe the worker reads into log events, `logging::capture`) as
//! SCM_RIGHTS. The preloader forks; the child joins this worker's process group (so
//! the master's deadline kill reaches it, never the preloader), takes the three
//! descriptors as its stdin, stdout and stderr, and speaks batch mode. The preloader
//! answers `{"pid":…}` (or `{"error":…}`). From then on the worker sees what it would see
//! of a batch handler it had started itself: it writes the input, reads result lines, and
//! the batch has ended when the output closes (or, the child having exited, as a handler's
//! does: `worker::watched`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A forked batch: where its input goes and its results come from.
pub struct Forked {
    pub input: File,
    pub output: File,
    pub pid: u32,
}

/// How long the preloader may take to answer a fork request: a fork of even a large
/// application takes milliseconds; a preloader that does not answer is wedged.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Ask the preloader at `socket` to fork a child for a batch of `messages`, which sets
/// `memory_limit` (bytes) as its data limit when there is one, and whose stderr is `log`
/// (else the worker's own).
pub fn fork(
    socket: &Path,
    messages: usize,
    memory_limit: Option<u64>,
    log: Option<BorrowedFd>,
) -> io::Result<Forked> {
    let (in_read, in_write) = pipe()?;
    let (out_read, out_write) = pipe()?;
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let pgid = nix::unistd::getpgrp().as_raw();
    let line = match memory_limit {
        Some(bytes) => {
            format!("{{\"pgid\":{pgid},\"messages\":{messages},\"memory_limit\":{bytes}}}\n")
        }
        None => format!("{{\"pgid\":{pgid},\"messages\":{messages}}}\n"),
    };
    let log = log.map_or(io::stderr().as_raw_fd(), |l| l.as_raw_fd());
    let fds = [in_read.as_raw_fd(), out_write.as_raw_fd(), log];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(line.as_bytes())];
    nix::sys::socket::sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    // The child has its own copies now; ours must go, or the output never closes.
    drop((in_read, out_write));
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::other(format!(
                "the preloader did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            )),
            io::ErrorKind::InvalidData => {
                io::Error::other("the preloader answered bytes that are not UTF-8 text")
            }
            _ => e,
        })?;
    let pid = parse_answer(&answer)?;
    let _ = conn.flush();
    Ok(Forked {
        input: File::from(in_write),
        output: File::from(out_read),
        pid,
    })
}

/// The preloader's answer: the child's pid, or why there is none.
fn parse_answer(line: &str) -> io::Result<u32> {
    #[derive(serde::Deserialize)]
    struct Answer {
        pid: Option<u32>,
        error: Option<String>,
    }
    if line.is_empty() {
        return Err(io::Error::other(
            "the preloader closed the connection without answering",
        ));
    }
    let a: Answer = serde_json::from_str(line.trim_end())
        .map_err(|_| io::Error::other(format!("the preloader answered {:?}", line.trim_end())))?;
    match (a.pid, a.error) {
        (Some(pid), _) if pid > 1 => Ok(pid),
        (_, Some(e)) => Err(io::Error::other(format!(
            "the preloader could not fork: {e}"
        ))),
        _ => Err(io::Error::other(format!(
            "the preloader answered {:?}",
            line.trim_end()
        ))),
    }
}

/// A pipe whose ends close on exec (only the fork request passes them on).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_a_pid_or_an_error() {
        assert_eq!(parse_answer("{\"pid\":4242}\n").unwrap(), 4242);
        let e = parse_answer("{\"error\":\"out of memory\"}\n").unwrap_err();
        assert!(e.to_string().contains("could not fork: out of memory"));
        assert!(
            parse_answer("")
                .unwrap_err()
                .to_string()
                .contains("without answering")
        );
        assert!(parse_answer("{\"pid\":1}").is_err(), "never init");
        assert!(parse_answer("ready").is_err());
    }

    /// A preloader played by a thread: the request's line and descriptors arrive whole,
    /// and what the "child" writes on the passed output reaches the worker.
    #[test]
    fn a_fork_request_passes_the_batch_pipes() {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::io::{IoSliceMut, Read};
        use std::os::fd::FromRawFd;
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("chore-preload-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let mut fds = Vec::new();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(f) = c {
                    fds.extend(f);
                }
            }
            let n = msg.bytes;
            let line = String::from_utf8(buf[..n].to_vec()).unwrap();
            // SAFETY: the descriptors were just received and are ours alone.
            let (mut input, mut output) =
                unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
            (&conn).write_all(b"{\"pid\":99999}\n").unwrap();
            drop(conn);
            let mut got = String::new();
            input.read_to_string(&mut got).unwrap();
            output
                .write_all(b"{\"id\":\"a\",\"result\":\"ok\"}\n")
                .unwrap();
            (line, got, fds.len())
        });
        let mut f = fork(&path, 1, Some(64 << 20), None).unwrap();
        assert_eq!(f.pid, 99999);
        f.input.write_all(b"{\"id\":\"a\"}\n").unwrap();
        drop(f.input);
        let mut results = String::new();
        f.output.read_to_string(&mut results).unwrap();
        let (line, got, n) = server.join().unwrap();
        assert!(line.starts_with("{\"pgid\":"), "{line}");
        assert!(
            line.ends_with("\"messages\":1,\"memory_limit\":67108864}\n"),
            "{line}"
        );
        assert_eq!((got.as_str(), n), ("{\"id\":\"a\"}\n", 3));
        assert_eq!(results, "{\"id\":\"a\",\"result\":\"ok\"}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
