"""The application examples/preload/preloader.py preloads: it takes a second to import (as
a real one would, loading libraries, reading models, warming caches), then defines one
function per job class. A function returns None when the job is done, or raises."""
import sys
import time

time.sleep(1)  # the slow boot the preloader pays once, not once per batch
print("app.py: booted", file=sys.stderr, flush=True)


class Retry(Exception):
    """Raised by a job that should be tried again later."""


def Greet(name):
    print(f"app.py: hello, {name}", file=sys.stderr, flush=True)


def Divide(a, b):
    print(f"app.py: {a} / {b} = {a / b}", file=sys.stderr, flush=True)  # b = 0 raises


def Busy(*_):
    raise Retry("the database is busy")  # reported as "retry", asking for a 2 s delay


# What a message's "class" may name: only these run.
JOBS = {"Greet": Greet, "Divide": Divide, "Busy": Busy}
