#!/usr/bin/env python3
"""A minimal web application for chore's HTTP handler (Python 3 standard library only).

chore POSTs each message of the example's queue to / and each periodic task to its
`url` from cron.yaml, the way Elastic Beanstalk's SQS daemon does. This app logs what it
receives (the X-Aws-Sqsd-* headers and the body) and answers:

- POST /tasks/cleanup (the periodic task): 200;
- POST / : 200; but a body {"fail_attempts": N} gets a 500 while X-Aws-Sqsd-Receive-Count
  is at most N, to show chore retrying it (every 2 s, the daemon's error visibility);
- GET /up: 200 (a health-check path chore can be pointed at);
- anything else: 404.

Only a 200 tells chore to delete the message. Run: python3 examples/http/app.py [PORT]
(default 8080, on 127.0.0.1).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps chore's connections alive between messages.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        # One block per request, printed at once: requests can arrive together.
        lines = [f"POST {self.path}"]
        sqsd = {k: v for k, v in self.headers.items() if k.lower().startswith("x-aws-sqsd-")}
        lines += [f"  {name}: {value}" for name, value in sorted(sqsd.items())]
        if self.path.startswith("/tasks/"):
            task = self.headers.get("X-Aws-Sqsd-Taskname", "?")
            tick = self.headers.get("X-Aws-Sqsd-Scheduled-At", "?")
            lines.append(f"  periodic task {task} for {tick}: done")
            status = 200
        elif self.path == "/":
            lines.append(f"  body: {body.decode('utf-8', 'replace')}")
            count = int(self.headers.get("X-Aws-Sqsd-Receive-Count") or 1)
            status = 500 if count <= fail_attempts(body) else 200
        else:
            status = 404
        lines.append(f"  answered {status}")
        self.log("\n".join(lines))
        self.answer(status)

    def do_GET(self):
        self.answer(200 if self.path == "/up" else 404)

    def answer(self, status):
        text = b"OK" if status == 200 else b"not done"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log(self, text):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def log_message(self, fmt, *args):
        # do_POST prints its own block; other requests (GET /up) are not worth a line.
        pass


def fail_attempts(body):
    """How many deliveries of this message should fail: {"fail_attempts": N}, else 0."""
    try:
        n = json.loads(body).get("fail_attempts", 0)
        return n if isinstance(n, int) else 0
    except (ValueError, AttributeError):
        return 0


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
