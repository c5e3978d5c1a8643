#!/usr/bin/env python3
"""A preloader for chore's `mode = "preload"` handlers (docs/handlers.md), in Python's
standard library: import the application once, then fork a child per batch, which runs
each message's `class` as one of app.JOBS with the body's `args`. Run by chore, which sets
CHORE_PRELOAD_SOCKET (see README.md beside this file)."""
import json
import os
import resource
import signal
import socket
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app  # noqa: E402  the slow part, done once, before we are ready


def result(msg_id, outcome, **extra):
    print(json.dumps({"id": msg_id, "result": outcome, **extra}), flush=True)


def run_batch():
    """The batch-mode protocol: a JSON line per message in, a result line per message out."""
    for line in sys.stdin:
        msg = json.loads(line)
        body = msg["body"]
        job = app.JOBS.get(msg["class"])
        if job is None or not isinstance(body, dict):
            result(msg["id"], "permanent", error=f"no job for class {msg['class']!r}")
            continue
        try:
            job(*body.get("args", []))
        except app.Retry as e:
            result(msg["id"], "retry", delay=2, error=str(e))
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            result(msg["id"], "fail", error=f"{type(e).__name__}: {e} at {where.filename}:{where.lineno}")
        else:
            result(msg["id"], "ok")


def child(conn, server, pgid, fds, memory_limit):
    """In the forked child: join the worker's group, take the descriptors, run, exit."""
    os.setpgid(0, pgid)  # chore's deadline kill (SIGKILL to that group) must reach us
    if memory_limit:  # the queue's memory-limit: the data limit, soft and hard
        resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    for target, fd in enumerate(fds):  # input, output, log -> 0, 1, 2
        os.dup2(fd, target)
        os.close(fd)
    conn.close()
    server.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
    try:
        run_batch()
    finally:
        sys.stdout.flush()
        os._exit(0)  # never back into the preloader's loop


def serve(conn, server):
    """One connection: a fork request, or nothing (chore's readiness check)."""
    data, fds, _, _ = socket.recv_fds(conn, 4096, 3)
    if not data:
        return
    try:
        request = json.loads(data)
        if len(fds) != 3:
            raise ValueError(f"expected 3 descriptors, got {len(fds)}")
        pid = os.fork()
        if pid == 0:
            child(conn, server, request["pgid"], fds, request.get("memory_limit"))
        answer = {"pid": pid}
    except (ValueError, KeyError, OSError) as e:
        answer = {"error": str(e)}
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps(answer).encode() + b"\n")


def reap(*_):
    """SIGCHLD: collect every finished child, so none stays a zombie."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main():
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # chore recycles or stops us
    path = os.environ["CHORE_PRELOAD_SOCKET"]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)  # from here on, chore sees us ready
    print(f"preloader.py: ready on {path}", file=sys.stderr, flush=True)
    me = os.getpid()
    try:
        while True:
            conn, _ = server.accept()  # retried by Python after SIGCHLD (PEP 475)
            with conn:
                serve(conn, server)
    finally:
        if os.getpid() == me:  # not in a child that SIGTERM caught before it reset it
            os.unlink(path)


if __name__ == "__main__":
    main()
