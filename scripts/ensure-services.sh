#!/usr/bin/env bash
# Install and start what the tests need: Mosquitto (the tests start their own
# brokers from its binary), OpenSSL for the TLS tests, Chromium for the page
# tests, and a PostgreSQL server on 127.0.0.1:5432.
set -euo pipefail

missing=()
[[ -x /usr/sbin/mosquitto ]] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null || missing+=(mosquitto-clients)
command -v openssl >/dev/null || missing+=(openssl)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
# The dispatcher page tests drive Debian's Chromium through Playwright.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)

if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian's packages" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "not root: install them yourself with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

postgres_ready() {
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null
}

if ! postgres_ready; then
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [[ -n "$version" ]]; then
        echo "starting PostgreSQL $version" >&2
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 30); do
        postgres_ready && break
        sleep 1
    done
fi
if postgres_ready; then
    echo "PostgreSQL is ready on 127.0.0.1:5432" >&2
else
    echo "PostgreSQL is not reachable on 127.0.0.1:5432; postgres tests will fail" >&2
fi
