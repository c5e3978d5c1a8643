#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests need
# (memcached and ruby from Debian, moto from PyPI into ./.venv) when it is missing, then runs
# `cargo test`. The tests start memcached and moto_server themselves, on free loopback
# ports, and fail (never skip) when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
    echo "==> installing memcached (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
fi

# Ruby Chore's publisher and job classes, and the Ruby preloader, run under Debian's ruby.
# The packaging tests check the generated unit with systemd-analyze, which runs man for its
# Documentation= line. The clock-step test preloads libfaketime (package faketime) into a
# master.
for tool in systemd-analyze:systemd man:man-db faketime:faketime; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        echo "==> installing ${tool#*:} (apt-get)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null
    fi
done

if ! command -v ruby >/dev/null 2>&1; then
    echo "==> installing ruby (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ruby >/dev/null
fi

if [ ! -x .venv/bin/moto_server ]; then
    echo "==> installing moto[server] into ./.venv (pip)"
    if ! python3 -m venv .venv 2>/dev/null; then
        # Debian's own python3 keeps venv in a separate package.
        rm -rf .venv
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]'
fi

export CHORE_TEST_MEMCACHED="${CHORE_TEST_MEMCACHED:-$(command -v memcached || echo /usr/bin/memcached)}"
export CHORE_TEST_MOTO_SERVER="${CHORE_TEST_MOTO_SERVER:-$PWD/.venv/bin/moto_server}"

echo "==> cargo test"
cargo test --locked "$@"
