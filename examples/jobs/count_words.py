#!/usr/bin/env python3
"""Batch-mode handler for the `documents` queue of Chorefile.example.

chore starts this once per batch. Standard input holds one JSON line per message:
    {"id": "...", "queue": "...", "attempt": 1, "class": null, "body": {...}}
For each message, print one result line on standard output as soon as it is done:
    {"id": "...", "result": "ok" | "retry" | "fail" | "permanent", "delay": 5, "error": "..."}
A message left without a result when this process ends counts as failed. Anything on stderr
(and any stdout line that is not a result) goes to chore's log.
"""
import json
import sys


def result(msg_id, outcome, **extra):
    # One line per message, flushed at once: chore settles each message as its line arrives.
    print(json.dumps({"id": msg_id, "result": outcome, **extra}), flush=True)


def main():
    lines = sys.stdin.readlines()
    print(f"count_words.py: got a batch of {len(lines)} message(s)", file=sys.stderr)
    for line in lines:
        msg = json.loads(line)
        body = msg["body"]
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            result(msg["id"], "permanent", error="the body has no \"text\" string")
            continue
        print(f"count_words.py: {msg['id']}: {len(text.split())} words", file=sys.stderr)
        result(msg["id"], "ok")


if __name__ == "__main__":
    main()
