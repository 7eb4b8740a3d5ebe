#!/usr/bin/env bash
# Stop the Ray head started by start_ray_head.sh, and only it: every process in the process group
# it recorded (start_ray_head.sh runs `ray start` in a session of its own) or whose command line
# names its temp dir (raylet, GCS, dashboard, log monitor), found through /proc. Never
# `ray stop`, which ends every Ray cluster on the machine, other people's too.
# Env: BATON_RAY_TMPDIR (same default as start_ray_head.sh), BATON_STOP_TIMEOUT_S (10).
set -euo pipefail

tmp=${BATON_RAY_TMPDIR:-/tmp/baton-ray-$(id -u)}
timeout_s=${BATON_STOP_TIMEOUT_S:-10}

pgid=$(cat "$tmp/head.pgid" 2>/dev/null || true)
[[ "$pgid" =~ ^[0-9]+$ ]] || pgid=""

# Builtins only (read, mapfile): no helper process of ours can show up in the scan.
own_pids() {
  local dir pid stat state pg cmd parts
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    { read -r stat <"$dir/stat"; } 2>/dev/null || continue
    stat=${stat##*) } # fields after the command name, which may hold spaces
    read -r state _ppid pg _rest <<<"$stat"
    [[ "$state" == Z ]] && continue # already dead, waiting for its parent to reap it
    if [[ -n "$pgid" && "$pg" == "$pgid" ]]; then
      echo "$pid"
      continue
    fi
    { mapfile -d '' parts <"$dir/cmdline"; } 2>/dev/null || continue
    cmd="${parts[*]}"
    if [[ "$cmd" == *"$tmp/"* ]]; then
      echo "$pid"
    fi
  done
}

pids=$(own_pids)
if [[ -z "$pids" ]]; then
  echo "no Ray process under $tmp"
  exit 0
fi
# shellcheck disable=SC2086
kill -TERM $pids 2>/dev/null || true
for _ in $(seq $((timeout_s * 10))); do
  pids=$(own_pids)
  [[ -z "$pids" ]] && break
  sleep 0.1
done
if [[ -n "$pids" ]]; then
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
fi
rm -f "$tmp/head.env" "$tmp/head.pgid"
echo "stopped Ray head under $tmp"
