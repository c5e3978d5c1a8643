"""A stand-in for an Elastic Beanstalk worker application, for chore's HTTP-mode tests.

It answers POSTs the way a test tells it to and records every request, so a test can check
what chore sent (method, path, headers with their exact names, body byte for byte, peer,
which connection carried it) and when. Standard library only.

    python3 http_app.py --port PORT --log FILE [--rules JSON] [--listen-after FILE]

--port 0 picks a free port; the port is printed as the first line on stdout either way.
--listen-after FILE: the app "boots" until FILE exists, refusing connections meanwhile.

The log gets one JSON line per request when it arrives
  {"pid", "n", "conn", "at", "method", "path", "version", "headers": [[name, value]...],
   "body": base64, "peer": [host, port], "inflight"}
and one when its answer has been written (or failed to be)
  {"pid", "answered": n, "at", "status", "ok"}.

Rules (JSON) say how to answer: {"default": RULE, "paths": {"/p": RULE}, "ids": {"msgid":
RULE}}; a request's rule is that of its X-Aws-Sqsd-Msgid, else its path, else the default.
RULE keys, all optional: status (200), delay (seconds before answering), retry_after (a
Retry-After header), trickle ([n, seconds] or [n, seconds, "body"]: the head, or a body
of n bytes, is sent in pieces, one every `seconds`, so bytes keep arriving), body, times (the rule holds for its first n requests
only, then the default applies). `POST /__control` with a rules object replaces them.
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"rules": {}, "used": {}, "n": 0, "conn": 0, "inflight": 0}
LOG = None


def record(entry):
    with LOCK:
        LOG.write(json.dumps(dict(entry, pid=os.getpid())) + "\n")
        LOG.flush()


def pick_rule(msgid, path):
    """The rule for this request; counts it against the rule's `times`."""
    rules = STATE["rules"]
    for kind, key in (("ids", msgid), ("paths", path)):
        rule = rules.get(kind, {}).get(key) if key is not None else None
        if rule is None:
            continue
        used = STATE["used"].get((kind, key), 0)
        if "times" in rule and used >= rule["times"]:
            continue
        STATE["used"][(kind, key)] = used + 1
        return rule
    return rules.get("default", {})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the daemon's pool expects

    def setup(self):
        super().setup()
        with LOCK:
            STATE["conn"] += 1
            self.conn = STATE["conn"]

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def control(self, body):
        with LOCK:
            STATE["rules"] = json.loads(body or b"{}")
            STATE["used"] = {}
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_request(self):
        body = self.read_body()
        path = self.path.split("?")[0]
        if path == "/__control":
            return self.control(body)
        with LOCK:
            STATE["n"] += 1
            STATE["inflight"] += 1
            n, inflight = STATE["n"], STATE["inflight"]
            rule = dict(pick_rule(self.headers.get("X-Aws-Sqsd-Msgid"), path))
        record({"n": n, "conn": self.conn, "at": time.time(), "method": self.command,
                "path": self.path, "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": base64.b64encode(body).decode(), "peer": list(self.client_address),
                "inflight": inflight})
        status, ok = int(rule.get("status", 200)), True
        try:
            time.sleep(float(rule.get("delay", 0)))
            self.answer(status, rule)
        except OSError:
            ok = False  # the client gave up (aborted, timed out)
            self.close_connection = True
        finally:
            with LOCK:
                STATE["inflight"] -= 1
            record({"answered": n, "at": time.time(), "status": status, "ok": ok})

    def answer(self, status, rule):
        payload = str(rule.get("body", "ok\n")).encode()
        pieces, pause, where = (list(rule.get("trickle", [0, 0])) + ["head"])[:3]
        if where == "body":
            payload = b"." * int(pieces)
        head = ["HTTP/1.1 %d %s\r\n" % (status, self.responses.get(status, ("",))[0])]
        head.append("Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(payload))
        if "retry_after" in rule:
            head.append("Retry-After: %s\r\n" % rule["retry_after"])
        if where == "head":
            head += ["X-Trickle: %d\r\n" % i for i in range(int(pieces))]
        head.append("\r\n")
        for i, piece in enumerate(head):
            if i > 1 and pieces and where == "head":  # the status line at once, then slowly
                time.sleep(float(pause))
            self.wfile.write(piece.encode())
        self.wfile.flush()
        for i in range(len(payload)):
            if pieces and where == "body":
                time.sleep(float(pause))
            self.wfile.write(payload[i:i + 1])
            self.wfile.flush()

    do_POST = do_GET = do_PUT = do_HEAD = do_DELETE = do_request


def main():
    global LOG
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True)
    p.add_argument("--rules", default="{}")
    p.add_argument("--listen-after")
    a = p.parse_args()
    STATE["rules"] = json.loads(a.rules)
    LOG = open(a.log, "a")
    while a.listen_after and not os.path.exists(a.listen_after):
        time.sleep(0.05)
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
