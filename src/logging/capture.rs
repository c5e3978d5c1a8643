//! A child's output as log events: what a handler prints (stdout in per-message mode,
//! stderr always, and the lines of a batch handler's stdout that are not results), and
//! what a preloader prints, becomes one log event per line, in the log's own format, with
//! the queue, the child's pid and the batch's message ids. So a JSON log stays one JSON
//! object per line whatever a child prints.
//!
//! Each child gets a pipe (`Pipe`); once it has started, a thread reads the pipe
//! (`Pipe::read_as`). A line is cut at `MAX_LINE` bytes (the rest follows as further
//! events, nothing dropped), bytes that are not UTF-8 become U+FFFD, and a last line
//! without a newline is logged when the pipe closes. The worker waits for every reader
//! (`finish`) before it exits, once nothing of the batch is left to hold a pipe open.
//!
//! A handler that prints nothing costs a pipe and a thread that sleeps in one `read`.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest log event one line makes; a longer line continues in the next event.
pub const MAX_LINE: usize = 16 * 1024;

/// Readers still running, for `finish`.
static READERS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Who printed: fields of every event.
#[derive(Clone, Debug)]
pub struct Source {
    /// The queue of the batch (None: a preloader, which may serve several).
    pub queue: Option<String>,
    pub pid: u32,
    /// The batch's message ids, comma-separated (None: not a batch's).
    pub ids: Option<String>,
}

/// Log one line a child printed.
pub fn log_line(from: &Source, line: &str) {
    tracing::info!(target: super::HANDLER, queue = from.queue.as_deref(), pid = from.pid, ids = from.ids.as_deref(), "{line}");
}

/// A pipe for a handler's output; its read end waits for the handler's pid.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        Ok(Pipe { read, write })
    }

    /// A handle on the write end, for a child's stdout or stderr.
    pub fn stdio(&self) -> io::Result<Stdio> {
        Ok(Stdio::from(self.write.try_clone()?))
    }

    /// The write end, to pass on (a preloader's fork request).
    pub fn write_end(&self) -> &OwnedFd {
        &self.write
    }

    /// The child has started: close our write end (the child has its own copies) and log
    /// what it prints from a thread of its own.
    pub fn read_as(self, from: Source) {
        let Pipe { read, write } = self;
        drop(write);
        let reader = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || read_lines(std::fs::File::from(read), &mut |l| log_line(&from, l)));
        match reader {
            Ok(h) => {
                let mut readers = READERS.lock().unwrap_or_else(|e| e.into_inner());
                // A long-lived process (the master, for its preloaders) keeps no ended ones.
                readers.retain(|r| !r.is_finished());
                readers.push(h);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a child's output; it is dropped"),
        }
    }
}

/// Wait for every reader, at most `limit` in all (a worker, before it exits: its handlers
/// have ended and whatever they left behind has been killed, so each pipe is closing and
/// its last line is on its way).
pub fn finish(limit: Duration) {
    let until = Instant::now() + limit;
    let readers = std::mem::take(&mut *READERS.lock().unwrap_or_else(|e| e.into_inner()));
    for r in readers {
        while !r.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
}

/// Call `each` with every line `input` gives until it ends: without its line break, cut
/// at `MAX_LINE` bytes, not-UTF-8 bytes replaced; a last unterminated line too.
pub fn read_lines(mut input: impl Read, each: &mut dyn FnMut(&str)) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut emit = |bytes: &[u8]| {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        each(&String::from_utf8_lossy(bytes));
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &buf[..n];
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..at]);
            for chunk in line.chunks(MAX_LINE) {
                emit(chunk);
            }
            if line.is_empty() {
                emit(b"");
            }
            line.clear();
            rest = &rest[at + 1..];
        }
        line.extend_from_slice(rest);
        while line.len() > MAX_LINE {
            emit(&line[..MAX_LINE]);
            line.drain(..MAX_LINE);
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        // One byte per read: lines are put together across reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        read_lines(Trickle(input), &mut |l| out.push(l.to_string()));
        let mut whole = Vec::new();
        read_lines(input, &mut |l| whole.push(l.to_string()));
        assert_eq!(out, whole, "the same lines whatever the reads");
        out
    }

    #[test]
    fn lines_partial_lines_and_garbage() {
        assert_eq!(lines(b"one\ntwo\r\n\nlast"), ["one", "two", "", "last"]);
        assert_eq!(lines(b""), Vec::<String>::new());
        assert_eq!(lines(b"a\xff\xfeb\n"), ["a\u{fffd}\u{fffd}b"]);
    }

    #[test]
    fn long_lines_are_cut_not_dropped() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let got = lines(&input);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1].len(), MAX_LINE);
        assert_eq!(got[2], "xxxxx");
        assert_eq!(got[3], "next");
    }

    #[test]
    fn a_pipe_is_read_until_its_writer_closes() {
        use std::io::Write;
        let pipe = Pipe::new().unwrap();
        let mut writer = std::fs::File::from(pipe.write_end().try_clone().unwrap());
        let Pipe { read, write } = pipe;
        drop(write);
        writer.write_all(b"partial").unwrap();
        drop(writer);
        let mut got = Vec::new();
        read_lines(std::fs::File::from(read), &mut |l| got.push(l.to_string()));
        assert_eq!(got, ["partial"]);
    }
}
