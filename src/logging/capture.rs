//! A child's output as log events: what a handler prints (stdout in per-message mode,
//! stderr always, and the lines of a batch handler's stdout that are not results), and
//! what a preloader prints, becomes one log event per line, in the log's own format, with
//! the queue, the child's pid and the batch's message ids. So a JSON log stays one JSON
//! object per line whatever a child prints.
//!
//! Each child gets a pipe (`Pipe`); once it has started, a thread reads the pipe
//! (`Pipe::read_as`), or the worker reads it in the loop that waits for the child: for a
//! per-message handler `Pipe::read_until_exit`, for a batch handler or a preloaded batch
//! `Pipe::read_inline` (no thread in the usual case either way; a bounded amount per look,
//! so that a process writing without end cannot hold that loop). A line is cut at
//! `MAX_LINE` bytes (the rest follows as further events, nothing dropped), bytes that are
//! not UTF-8 become U+FFFD, and a last line without a newline is logged when the pipe
//! closes. The worker waits for every reader (`finish`) before it exits, once nothing of
//! the batch is left to hold a pipe open.
//!
//! A handler that prints nothing costs a pipe and a place in a `poll`.

use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus, Stdio};
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

/// Log one line a child printed: in events of at most `MAX_LINE` bytes, control characters
/// (but tabs) escaped, so that no byte it prints can end a log line or drive a terminal.
pub fn log_line(from: &Source, line: &str) {
    let mut rest = line;
    loop {
        let (piece, more) = rest.split_at(rest.floor_char_boundary(MAX_LINE));
        let piece = printable(piece);
        tracing::info!(target: super::HANDLER, queue = from.queue.as_deref(), pid = from.pid, ids = from.ids.as_deref(), "{piece}");
        if more.is_empty() {
            return;
        }
        rest = more;
    }
}

/// `s` with its control characters but tabs written as escapes (`\u{1b}`).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
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
        read_in_thread(std::fs::File::from(read), Cutter::default(), from);
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
/// at `MAX_LINE` bytes, not-UTF-8 bytes replaced; a last unterminated line too. (What the
/// readers do; the tests call it directly.)
#[cfg(test)]
fn read_lines(input: impl Read, each: &mut dyn FnMut(&str)) {
    Cutter::default().read_to_end(input, each);
}

/// Bytes in, lines out, keeping a partial line between reads: the pure part of every reader.
#[derive(Default)]
struct Cutter {
    line: Vec<u8>,
}

impl Cutter {
    fn emit(bytes: &[u8], each: &mut dyn FnMut(&str)) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        each(&String::from_utf8_lossy(bytes));
    }

    fn feed(&mut self, mut bytes: &[u8], each: &mut dyn FnMut(&str)) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..at]);
            for chunk in self.line.chunks(MAX_LINE) {
                Self::emit(chunk, each);
            }
            if self.line.is_empty() {
                Self::emit(b"", each);
            }
            self.line.clear();
            bytes = &bytes[at + 1..];
        }
        self.line.extend_from_slice(bytes);
        while self.line.len() > MAX_LINE {
            Self::emit(&self.line[..MAX_LINE], each);
            self.line.drain(..MAX_LINE);
        }
    }

    fn end(self, each: &mut dyn FnMut(&str)) {
        if !self.line.is_empty() {
            Self::emit(&self.line, each);
        }
    }

    fn read_to_end(mut self, mut input: impl Read, each: &mut dyn FnMut(&str)) {
        let mut buf = vec![0u8; 8192];
        loop {
            match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.feed(&buf[..n], each),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.end(each);
    }
}

/// How often a child's exit is looked for while its output is read, where the kernel
/// cannot say (no pidfd).
const EXIT_CHECK: u16 = 50;
const EXIT_CHECK_EVERY: Duration = Duration::from_millis(EXIT_CHECK as u64);

/// How much of a per-message handler's output is read after its exit on the thread that
/// waits for it; the rest (a process it left behind is still writing) goes to a thread.
const AFTER_EXIT_INLINE: usize = 1 << 20;

/// How much of a child's output one `Inline::drain` reads: a process writing without end
/// must not keep the loop that drains it from its other work.
const DRAIN_AT_MOST: usize = 256 * 1024;

impl Pipe {
    /// For a child run one at a time (a per-message handler): read its output on this
    /// thread until the child has exited, and return how it ended. No thread is started in
    /// the usual case, where the pipe closes when the child exits; if something the child
    /// left behind still holds the pipe open, a thread reads the rest (as `read_as`).
    pub fn read_until_exit(self, from: Source, child: &mut Child) -> io::Result<ExitStatus> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Pipe { read, write } = self;
        drop(write);
        let exit = pidfd(child.id()).ok();
        let mut input = std::fs::File::from(read);
        let mut cutter = Cutter::default();
        let mut each = |l: &str| log_line(&from, l);
        let mut buf = [0u8; 8192];
        // Once the child has exited, what is still in the pipe is read here, up to a bound:
        // a process it left behind may be writing faster than the log takes it.
        let mut after_exit: Option<usize> = None;
        let mut last_check = Instant::now();
        loop {
            let mut fds = vec![PollFd::new(input.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                exit.iter()
                    .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN)),
            );
            let timeout = match exit {
                Some(_) => PollTimeout::NONE,
                None => PollTimeout::from(EXIT_CHECK),
            };
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
                Ok(_) => {}
            }
            let readable = fds[0].revents().is_some_and(|r| !r.is_empty());
            let exit_shown = fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
            drop(fds);
            if readable {
                match input.read(&mut buf) {
                    Ok(0) => {
                        cutter.end(&mut each);
                        return child.wait();
                    }
                    Ok(n) => {
                        cutter.feed(&buf[..n], &mut each);
                        if let Some(read) = after_exit.as_mut() {
                            *read += n;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if after_exit.is_none() {
                let exited = match exit {
                    Some(_) => exit_shown,
                    // Without a pidfd, asked now and then, and whenever the pipe is quiet.
                    None if !readable || last_check.elapsed() >= EXIT_CHECK_EVERY => {
                        last_check = Instant::now();
                        !matches!(child.try_wait(), Ok(None))
                    }
                    None => false,
                };
                if exited {
                    after_exit = Some(0);
                }
            }
            if after_exit.is_some_and(|read| !readable || read >= AFTER_EXIT_INLINE) {
                break;
            }
        }
        // The child has gone and the pipe is still open: what holds it is read from a
        // thread, which ends when the worker kills what its handlers left behind.
        let reader = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || cutter.read_to_end(input, &mut |l| log_line(&from, l)));
        if let Ok(h) = reader {
            keep(h);
        }
        child.wait()
    }
}

/// A child's output read a little at a time by the loop that waits for the child
/// (`Pipe::read_inline`): that loop polls `fd` and calls `drain` when it is readable.
pub struct Inline {
    /// None once the pipe has closed, or when a thread reads it instead.
    input: Option<std::fs::File>,
    cutter: Cutter,
    from: Source,
}

impl Pipe {
    /// The child has started: close our write end and hand the read end, non-blocking, to
    /// the caller's loop.
    pub fn read_inline(self, from: Source) -> Inline {
        let Pipe { read, write } = self;
        drop(write);
        let input = std::fs::File::from(read);
        let input = match set_nonblocking(&input, true) {
            Ok(()) => Some(input),
            Err(_) => {
                // A drain could wait on the child: a thread reads instead.
                read_in_thread(input, Cutter::default(), from.clone());
                None
            }
        };
        Inline {
            input,
            cutter: Cutter::default(),
            from,
        }
    }
}

/// Log the lines of `input` from a thread of its own, until it closes (`finish` waits).
fn read_in_thread(input: std::fs::File, cutter: Cutter, from: Source) {
    let reader = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || cutter.read_to_end(input, &mut |l| log_line(&from, l)));
    match reader {
        Ok(h) => keep(h),
        Err(e) => tracing::warn!(error = %e, "cannot read a child's output; it is dropped"),
    }
}

impl Inline {
    /// The descriptor to poll, while the pipe is open.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.input.as_ref().map(|f| f.as_fd())
    }

    /// Log what can be read now (up to `DRAIN_AT_MOST`), without waiting.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        let mut read = 0;
        while let Some(input) = self.input.as_mut()
            && read < DRAIN_AT_MOST
        {
            match input.read(&mut buf) {
                Ok(n) if n > 0 => {
                    read += n;
                    self.cutter
                        .feed(&buf[..n], &mut |l| log_line(&self.from, l))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The end, or a pipe that cannot be read.
                _ => self.input = None,
            }
        }
    }

    /// The child has ended: log what is left. If something it left behind still holds the
    /// pipe open, a thread reads the rest.
    pub fn finish(mut self) {
        self.drain();
        let Inline {
            input,
            cutter,
            from,
        } = self;
        match input {
            Some(input) if set_nonblocking(&input, false).is_ok() => {
                read_in_thread(input, cutter, from)
            }
            _ => cutter.end(&mut |l| log_line(&from, l)),
        }
    }
}

fn set_nonblocking(f: &std::fs::File, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(f, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// A descriptor that becomes readable when process `pid` (a child of ours or not) exits,
/// where the kernel has `pidfd_open` (Linux 5.3). ESRCH: there is no such process (any
/// more); ENOSYS: an older kernel.
pub fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result is a descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Keep a reader for `finish`, dropping those that have ended.
fn keep(h: JoinHandle<()>) {
    let mut readers = READERS.lock().unwrap_or_else(|e| e.into_inner());
    // A long-lived process (the master, for its preloaders) keeps no ended ones.
    readers.retain(|r| !r.is_finished());
    readers.push(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_but_tabs() {
        assert_eq!(printable("plain\ttext é"), "plain\ttext é");
        assert_eq!(
            printable("a\nERROR forged\u{1b}[31m\0"),
            "a\\u{a}ERROR forged\\u{1b}[31m\\u{0}"
        );
    }

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
