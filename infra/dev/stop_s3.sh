#!/usr/bin/env bash
# Stop the moto server started by start_s3.sh, by the pid in its pid file (same env as start_s3.sh).
set -euo pipefail

port=${BATON_S3_PORT:-5000}
pidfile=${BATON_S3_PIDFILE:-/tmp/baton-s3-$port.pid}

if [[ ! -f "$pidfile" ]]; then
  echo "no pid file $pidfile" >&2
  exit 0
fi
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$pidfile"
echo "stopped moto server (pid $pid)"
