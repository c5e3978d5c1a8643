#!/bin/sh
# Per-message handler for the `mail` queue of Chorefile.example, which routes Ruby Chore
# style bodies ({"class":"WelcomeEmail","args":[...]}) by their class. The Chorefile passes
# the kind of email as the first argument; the job class is also in $CHORE_JOB_CLASS.
body=$(cat)
echo "send_email.sh: would send a '$1' email ($CHORE_JOB_CLASS) for $body" >&2
