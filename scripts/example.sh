#!/usr/bin/env bash
# The README's first command: build chore, enqueue a few sample jobs into the example's
# filesystem queues (tmp/example-queues, emptied first), and run the master in the
# foreground on Chorefile.example. Ctrl-C drains (running workers finish) and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release
chore=target/release/chore

# Start from empty queues so that every run shows the same thing.
rm -rf tmp/example-queues

echo "==> enqueueing sample jobs"
# greetings: a per-message shell handler. The second job fails twice (exit 75) and succeeds
# on its third attempt; the third has no name and is dead-lettered at once (exit 65).
"$chore" enqueue -c Chorefile.example greetings '{"name":"Ada"}'
"$chore" enqueue -c Chorefile.example greetings '{"name":"Grace","flaky":true}'
"$chore" enqueue -c Chorefile.example greetings '{"nickname":"anonymous"}'

# documents: a batch-mode Python handler; several messages on stdin, one per line.
"$chore" enqueue -c Chorefile.example documents - <<'JSONL'
{"text":"the quick brown fox"}
{"text":"jumps over the lazy dog"}
{"text":"chore runs each batch in a fresh worker process"}
JSONL

# mail: Ruby Chore style bodies, routed by class. --class wraps the arguments as
# {"class":"WelcomeEmail","args":["ada@example.com"]}.
"$chore" enqueue -c Chorefile.example mail --class WelcomeEmail '["ada@example.com"]'
"$chore" enqueue -c Chorefile.example mail --class PasswordReset '["grace@example.com"]'

cat <<'EOF'
==> starting: target/release/chore -c Chorefile.example
    Watch the jobs run below. The Grace greeting fails twice and succeeds on its third
    attempt: the greetings queue's backoff, "2 ^ attempt", retries it 2 s after its first
    attempt and 4 s after its second (a filesystem retry comes back within a second or
    two after its delay). The anonymous one ends in tmp/example-queues/greetings/dead/.
    Enqueue more from another terminal with, for example:
        target/release/chore enqueue -c Chorefile.example greetings '{"name":"you"}'
    Press Ctrl-C to drain and exit.
EOF
exec "$chore" -c Chorefile.example
