#!/usr/bin/env bash
# Start a local S3 API (moto server) on 127.0.0.1 for development and tests.
# Env: VENV (default <repo>/.venv), BATON_S3_PORT (default 5000), BATON_S3_PIDFILE (default
# /tmp/baton-s3-<port>.pid). Prints the endpoint (AWS_ENDPOINT_URL=...) once it answers.
# Clients need dummy credentials (AWS_ACCESS_KEY_ID=testing etc.): moto accepts any.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
port=${BATON_S3_PORT:-5000}
pidfile=${BATON_S3_PIDFILE:-/tmp/baton-s3-$port.pid}
log=${pidfile%.pid}.log

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "moto server already running (pid $(cat "$pidfile"))" >&2
  exit 1
fi

nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
echo $! >"$pidfile"

for _ in $(seq 100); do
  if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
PY
    echo "AWS_ENDPOINT_URL=http://127.0.0.1:$port"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "moto server exited; log: $log" >&2
    tail -n 20 "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.2
done
echo "moto server did not answer on 127.0.0.1:$port within 20 s; log: $log" >&2
exit 1
