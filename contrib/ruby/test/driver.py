#!/usr/bin/env python3
"""Tests of contrib/ruby/bin/chore-preload: this script plays chore's side of the preload
protocol (start the preloader with CHORE_PRELOAD_SOCKET, wait until it accepts, send fork
requests with three descriptors, feed batch lines, read result lines, SIGTERM it) against
the application in test/fixtures. Standard library only; run it as

    python3 contrib/ruby/test/driver.py

It prints one line per check and exits non-zero at the first failure."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PRELOAD = os.path.join(HERE, "..", "bin", "chore-preload")
FIXTURES = os.path.join(HERE, "fixtures")


def check(cond, what, detail=""):
    if not cond:
        sys.exit(f"FAIL: {what}\n{detail}")
    print(f"ok: {what}")


class Preloader:
    """One preloader process, started as chore starts it (own process group, stdin null)."""

    def __init__(self, tmp, name, require, rubylib=None, command=None):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.trace = os.path.join(tmp, f"{name}.trace")
        env = dict(os.environ, CHORE_PRELOAD_SOCKET=self.sock, TRACE=self.trace)
        env.pop("RAILS_ENV", None)
        env.pop("RACK_ENV", None)
        if rubylib:
            env["RUBYLIB"] = rubylib
        self.log = open(os.path.join(tmp, f"{name}.log"), "w+")
        command = command or ["ruby", PRELOAD, "--require", require]
        self.proc = subprocess.Popen(command, env=env, cwd=tmp,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     process_group=0)

    def wait_ready(self, timeout=20):
        # chore's readiness check: connect, then close at once without a request.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("FAIL: the preloader exited while booting\n" + self.log_text())
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("FAIL: preloader not ready in time\n" + self.log_text())

    def request(self, pgid, n, fds):
        """Sends one fork request; returns the parsed answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            line = json.dumps({"pgid": pgid, "messages": n}).encode() + b"\n"
            socket.send_fds(s, [line], fds)
            answer = s.makefile("rb").readline()
        return json.loads(answer)

    def start_batch(self, pgid, lines):
        """Starts a batch: returns (child pid, output file, log file, stdout inode)."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        log_r, log_w = os.pipe()
        answer = self.request(pgid, len(lines), [in_r, out_w, log_w])
        for fd in (in_r, out_w, log_w):
            os.close(fd)
        check("pid" in answer, "fork request answered with a pid", answer)
        with os.fdopen(in_w, "w") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
        return answer["pid"], os.fdopen(out_r), os.fdopen(log_r), os.fstat(out_r).st_ino

    def run_batch(self, pgid, lines):
        pid, out, log, _ = self.start_batch(pgid, lines)
        results = {}
        stray = []
        for raw in out:
            try:
                obj = json.loads(raw)
                results[obj["id"]] = obj
            except (ValueError, KeyError):
                stray.append(raw)
        return pid, results, stray, log.read()

    def events(self):
        with open(self.trace) as f:
            return [line.split() for line in f]

    def log_text(self):
        self.log.seek(0)
        return self.log.read()


def msg(mid, cls, args=(), attempt=1, body=None):
    body = body if body is not None else {"class": cls, "args": list(args)}
    return {"id": mid, "queue": "q", "attempt": attempt, "class": cls, "body": body}


def names(events):
    return [e[0] for e in events]


def main():
    tmp = tempfile.mkdtemp(prefix="chore-preload-test-")
    # The worker's process group the children must join: a helper in a group of its own.
    group = subprocess.Popen(["sleep", "120"], process_group=0)
    pgid = group.pid
    p = Preloader(tmp, "app", os.path.join(FIXTURES, "app.rb"))
    try:
        run_app_tests(p, pgid)
        run_rails_root_test(tmp, pgid)
        run_gem_test(tmp, pgid)
        run_python_example_test(tmp, pgid)
        run_usage_tests(tmp)
    finally:
        for proc in (p.proc, group):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print("all chore-preload tests passed")


def run_app_tests(p, pgid):
    p.wait_ready()
    for _ in range(3):  # more readiness probes: ignored
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(p.sock)
    check(p.proc.poll() is None, "connections closed without a request are ignored")

    lines = [
        msg("greet", "Greet", ["ada"]),
        msg("boom", "Boom"),
        msg("nested", "Nested::Job", [2, 3]),
        msg("unknown", "NoSuchJob"),
        msg("noclass", None, body={"sku": "x"}),
        msg("array", None, body=[1, 2]),
        msg("reject", "Rejecter"),
        msg("limited1", "Limited", attempt=1),
        msg("limited2", "Limited", attempt=2),
        msg("backoff", "Backoffed", attempt=3),
        msg("plain", "PlainJob", ["tea"]),
        msg("where", "WhereAmI"),
    ]
    pid, res, stray, log = p.run_batch(pgid, lines)
    r = {k: v["result"] for k, v in res.items()}
    check(len(res) == len(lines), "one result per message", res)
    check(r["greet"] == "ok" and r["nested"] == "ok" and r["plain"] == "ok", "jobs run: ok", res)
    err = res["boom"].get("error", "")
    check(r["boom"] == "fail" and err.startswith("RuntimeError: kaboom at ") and "app.rb" in err,
          "a raising job: fail with class, message and backtrace", res["boom"])
    check(r["unknown"] == "permanent" and "NoSuchJob" in res["unknown"]["error"],
          "unknown class: permanent", res["unknown"])
    check(r["noclass"] == "permanent" and r["array"] == "permanent", "body without class: permanent", res)
    check(r["reject"] == "retry" and "RejectMessageException" in res["reject"]["error"],
          "RejectMessageException: retry", res["reject"])
    check(r["limited1"] == "fail" and r["limited2"] == "permanent",
          "the job's max_attempts: fail, then permanent at attempt 2", res)
    check(r["backoff"] == "retry" and res["backoff"].get("delay") == 30, "backoff: retry with its delay", res["backoff"])
    check(stray == ["a stray print\n"], "a job's own print reaches stdout as a non-result line", stray)
    check("greeting ada" in log, "a job's stderr goes to the log descriptor", log)

    ev = p.events()
    child = [e[:-1] for e in ev if e[-1] == str(pid)]
    check(names(ev).count("boot") == 1 and names(ev).count("before_first_fork") == 1, "booted once")
    check(["before_fork", "12"] in [e[:-1] for e in ev if e[-1] == str(p.proc.pid)],
          "before_fork ran in the preloader")
    expected_greet = [["within_fork_start"], ["after_fork"], ["global_before_perform", "Greet"],
                      ["Greet.before_perform_a"], ["Greet.before_perform_b"], ["perform", "Greet", "ada", "args=1"],
                      ["Greet.after_perform_log"]]
    check(child[:7] == expected_greet, "fork and job hooks ran in order, in the child", child)
    check(child.index(["global_on_failure", "Boom", "RuntimeError"]) < child.index(["Boom.on_failure", "kaboom"]),
          "on_failure hooks: global then the job's", child)
    check(["Rejecter.on_rejected"] in child, "on_rejected hook", child)
    check(["Limited.on_permanent_failure", "q", "ArgumentError"] in child, "on_permanent_failure hook", child)
    check(["Backoffed.on_delay"] in child, "on_delay hook", child)
    check(["perform", "Nested::Job", "5"] in child and ["perform", "PlainJob", "tea"] in child, "args splatted", child)
    where = next(e for e in child if e[0] == "where")
    check(where[1] == f"pgrp={pgid}", "the child joined the given process group", where)
    check(where[3] == "env=development", "RAILS_ENV defaults to development", where)
    check(where[4] == "gem=0", "without the gem: the stand-in Chore::Job", where)
    check(child[-1] == ["before_fork_shutdown"] and ["within_fork_after_yield"] not in child,
          "before_fork_shutdown last; within_fork's code after yield never runs", child)

    # A long batch does not hold the preloader: a second batch runs meanwhile.
    slow_pid, slow_out, _, out_ino = p.start_batch(pgid, [msg("slow", "Sleeper", [2])])
    wait_for(lambda: ["sleeping"] in [e[:-1] for e in p.events() if e[-1] == str(slow_pid)], "sleeper started")
    check(os.getpgid(slow_pid) == pgid, "a running child is in the worker's process group")
    fd1 = os.readlink(f"/proc/{slow_pid}/fd/1")
    check(fd1 == f"pipe:[{out_ino}]", "the child's fd 1 is the received output", fd1)
    t0 = time.monotonic()
    _, res2, _, _ = p.run_batch(pgid, [msg("again", "Greet", ["bob"])])
    check(res2["again"]["result"] == "ok" and time.monotonic() - t0 < 1.5,
          "a second batch runs while the first is busy")
    check(names(p.events()).count("boot") == 1, "boot ran once across batches")
    wait_for(lambda: not zombies_of(p.proc.pid), "finished children are reaped")
    print("ok: finished children are reaped")

    # A request with the wrong descriptors gets an error answer, not a fork.
    r, w = os.pipe()
    answer = p.request(pgid, 1, [r])
    os.close(r), os.close(w)
    check("error" in answer and "3 file descriptors" in answer["error"], "bad request: error answer", answer)

    # An abandoned batch: NotImplementedError ends it; the later message gets no result.
    _, res3, _, _ = p.run_batch(pgid, [msg("unfinished", "Unfinished"), msg("after", "Greet", ["x"])])
    check(res3.get("unfinished", {}).get("result") == "fail" and "after" not in res3,
          "a non-StandardError fails its message and abandons the batch", res3)

    # SIGTERM: before_shutdown, the socket goes, the process exits at once; the running
    # batch child (in the worker's group) is not touched and still reports.
    slow_pid, slow_out, _, _ = p.start_batch(pgid, [msg("slow2", "Sleeper", [1])])
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    status = p.proc.wait(timeout=5)
    check(status == 0 and time.monotonic() - t0 < 2, "SIGTERM stops the preloader promptly", status)
    check("before_shutdown" in names(p.events()) and not os.path.exists(p.sock),
          "before_shutdown ran and the socket is removed")
    got = [json.loads(line) for line in slow_out]
    check(got == [{"id": "slow2", "result": "ok"}], "a batch outlives its preloader", got)




def wait_for(cond, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"FAIL: {what}: timed out")


def zombies_of(ppid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and fields[1] == str(ppid):
            found.append(entry)
    return found


def run_rails_root_test(tmp, pgid):
    root = os.path.join(FIXTURES, "rails_root")
    p = Preloader(tmp, "rails", root)
    try:
        p.wait_ready()
        _, res, _, _ = p.run_batch(pgid, [msg("where", "WhereAmI")])
        check(res["where"]["result"] == "ok", "Rails root: jobs run", res)
        where = next(e for e in p.events() if e[0] == "where")
        check(where[2] == f"cwd={os.path.realpath(root)}", "Rails root: runs from inside the root", where)
        check(["rails_environment", f"cwd={os.path.realpath(root)}"] in [e[:-1] for e in p.events()],
              "Rails root: config/environment.rb required from the root")
    finally:
        p.proc.terminate()
        p.proc.wait(timeout=5)


def run_gem_test(tmp, pgid):
    p = Preloader(tmp, "gem", os.path.join(FIXTURES, "app.rb"), rubylib=os.path.join(FIXTURES, "fake_gem"))
    try:
        p.wait_ready()
        _, res, _, _ = p.run_batch(pgid, [msg("where", "WhereAmI")])
        where = next(e for e in p.events() if e[0] == "where")
        check(res["where"]["result"] == "ok" and where[4] == "gem=1", "with the gem: its own Chore::Job", where)
    finally:
        p.proc.terminate()
        p.proc.wait(timeout=5)


def run_python_example_test(tmp, pgid):
    """examples/preload/preloader.py speaks the same protocol."""
    example = os.path.join(HERE, "..", "..", "..", "examples", "preload", "preloader.py")
    p = Preloader(tmp, "python", None, command=["python3", example])
    try:
        p.wait_ready()
        for _ in range(2):
            _, res, _, log = p.run_batch(pgid, [msg("a", "Greet", ["ada"]), msg("b", "Divide", [1, 0]),
                                                  msg("c", "Busy"), msg("d", "Nope")])
            got = {k: v["result"] for k, v in res.items()}
            check(got == {"a": "ok", "b": "fail", "c": "retry", "d": "permanent"} and "hello, ada" in log,
                  "examples/preload/preloader.py runs a batch", res)
        check(p.log_text().count("booted") == 1, "examples/preload/preloader.py booted once")
        wait_for(lambda: not zombies_of(p.proc.pid), "the Python preloader reaps its children")
    finally:
        p.proc.terminate()
        check(p.proc.wait(timeout=5) == 0 and not os.path.exists(p.sock), "the Python preloader stops on SIGTERM")


def run_usage_tests(tmp):
    env = {k: v for k, v in os.environ.items() if k != "CHORE_PRELOAD_SOCKET"}
    r = subprocess.run(["ruby", PRELOAD, "--require", os.path.join(FIXTURES, "app.rb")], env=env,
                       capture_output=True, text=True, timeout=10)
    check(r.returncode != 0 and "CHORE_PRELOAD_SOCKET" in r.stderr, "no socket: a clear error", r.stderr)
    r = subprocess.run(["ruby", PRELOAD], env=dict(env, CHORE_PRELOAD_SOCKET=os.path.join(tmp, "x")),
                       capture_output=True, text=True, timeout=10)
    check(r.returncode != 0 and "--require" in r.stderr, "no --require: a clear error", r.stderr)


if __name__ == "__main__":
    main()
