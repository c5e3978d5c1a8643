#!/bin/sh
# Per-message handler for the `greetings` queue of Chorefile.example.
#
# chore runs this once per message, with no shell in between: the message body (JSON) is on
# standard input and the message's details are in the environment. The exit status is the
# outcome: 0 done, 75 retry after the queue's backoff, 65 permanent failure (dead/), anything
# else a failure (retried with backoff until max-attempts).
#
# Everything written to stdout or stderr goes to chore's log.

body=$(cat)

case "$body" in
    *'"name"'*) ;;
    *)
        echo "greet.sh: $CHORE_MESSAGE_ID has no name; giving up on it (exit 65)" >&2
        exit 65
        ;;
esac

case "$body" in
    *'"flaky":true'*)
        if [ "$CHORE_ATTEMPT" -lt 3 ]; then
            echo "greet.sh: attempt $CHORE_ATTEMPT of $CHORE_MESSAGE_ID: pretending the network is down (exit 75)" >&2
            exit 75
        fi
        ;;
esac

echo "greet.sh: hello, $body (queue $CHORE_QUEUE, attempt $CHORE_ATTEMPT)" >&2
