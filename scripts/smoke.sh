#!/bin/sh
# Smoke test of the installed gostgev with the shipped demo (etc/gost.yaml):
# start it, check the routed hosts through the tunnel and the reverse proxy,
# reload with SIGHUP, stop it, and exit non-zero on the first failure.
# Needs curl and the loopback ports of the demo (8000, 8080, 8443, 18081, 18082).
set -eu

cd "$(dirname "$0")/.."
command -v gostgev >/dev/null || { echo "smoke: gostgev is not installed (pip install .)" >&2; exit 1; }
command -v curl >/dev/null || { echo "smoke: curl is needed (apt-get install curl)" >&2; exit 1; }

log=$(mktemp)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$log"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    echo "--- gostgev log ---" >&2
    cat "$log" >&2
    exit 1
}

# status HOST PORT -> the HTTP status code of GET / (000 if no answer)
status() {
    curl -s -o /dev/null -m 5 -w '%{http_code}' --resolve "$1:$2:127.0.0.1" "http://$1:$2/" || true
}

# expect CODE HOST PORT: retry for up to 10 s while the services and the tunnel come up
expect() {
    i=0
    while [ "$i" -lt 100 ]; do
        got=$(status "$2" "$3")
        [ "$got" = "$1" ] && { echo "smoke: ok   $2:$3 -> $got"; return 0; }
        i=$((i + 1))
        sleep 0.1
    done
    fail "$2:$3 answered $got, expected $1"
}

# Another demo still running would answer in our place and hide a failure.
for port in 8000 8080 8443 18081 18082; do
    if curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" 2>/dev/null; then
        echo "smoke: FAIL: 127.0.0.1:$port already answers: stop whatever runs the demo's ports first" >&2
        exit 1
    fi
done

gostgev -c etc/gost.yaml >"$log" 2>&1 &
pid=$!

expect 200 srv-0.local 8000           # through the tunnel to site A
expect 200 srv-1.local 8000           # through the tunnel to site B
expect 502 nobody.local 8000          # no ingress rule
expect 503 srv-2.local 8000           # rule, but no client for that tunnel
expect 200 a.example.com 8080         # the reverse proxy, no tunnel
expect 502 other.example.org 8080

kill -HUP "$pid"
i=0
until grep -q "reloaded" "$log"; do
    i=$((i + 1)); [ "$i" -lt 50 ] || fail "no reload logged after SIGHUP"; sleep 0.1
done
echo "smoke: ok   SIGHUP reload"
expect 200 srv-0.local 8000
expect 200 a.example.com 8080

kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 150 ] || fail "gostgev did not stop within 15 s of SIGTERM"; sleep 0.1
done
wait "$pid" || fail "gostgev exited with status $? after SIGTERM"
pid=""
echo "smoke: ok   clean stop"
echo "smoke: all checks passed"
