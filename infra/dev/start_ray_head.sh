#!/usr/bin/env bash
# Start a local Ray head for development, bound to loopback only, in a temp dir of its own so
# stop_ray_head.sh can stop exactly this head (never `ray stop`: it kills every Ray on the machine).
#
# Env: VENV (default <repo>/.venv), BATON_RAY_TMPDIR (default /tmp/baton-ray-<uid>; keep it short,
# Ray's socket paths must stay under 107 bytes), BATON_RAY_PORT (6379), BATON_RAY_DASHBOARD_PORT
# (8265), BATON_RAY_CLIENT_PORT (10001), BATON_RAY_AGENT_PORT (Ray's 52365: the dashboard agent's HTTP port,
# the one `ray job submit` needs; a second Ray on the machine already holds the default, so set it there),
# BATON_RAY_NUM_CPUS (all cores).
# Prints RAY_ADDRESS=... and RAY_DASHBOARD=... lines, also written to $BATON_RAY_TMPDIR/head.env.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
tmp=${BATON_RAY_TMPDIR:-/tmp/baton-ray-$(id -u)}
port=${BATON_RAY_PORT:-6379}
dash_port=${BATON_RAY_DASHBOARD_PORT:-8265}
client_port=${BATON_RAY_CLIENT_PORT:-10001}
agent_port=${BATON_RAY_AGENT_PORT:-52365}

# Without these two Ray advertised and bound a non-loopback address on this kind of machine.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0

mkdir -p "$tmp"
args=(start --head
  --node-ip-address=127.0.0.1
  --port="$port"
  --ray-client-server-port="$client_port"
  --dashboard-host=127.0.0.1
  --dashboard-port="$dash_port"
  --dashboard-agent-listen-port="$agent_port"
  --temp-dir="$tmp"
  --disable-usage-stats)
if [[ -n "${BATON_RAY_NUM_CPUS:-}" ]]; then
  args+=(--num-cpus="$BATON_RAY_NUM_CPUS")
fi

# A session of its own: every process of this head (daemons, agents, workers) shares one process
# group that stop_ray_head.sh can find, while nothing else on the machine does.
setsid -w "$venv/bin/ray" "${args[@]}" >"$tmp/start.log" 2>&1 || {
  echo "ray start failed; log: $tmp/start.log" >&2
  tail -n 20 "$tmp/start.log" >&2
  exit 1
}

gcs_pid=$(pgrep -f -- "gcs_server.*--log_dir=$tmp/" | head -n 1 || true)
if [[ -z "$gcs_pid" ]]; then
  echo "ray start returned but no GCS runs under $tmp" >&2
  exit 1
fi
stat=$(<"/proc/$gcs_pid/stat")
stat=${stat##*) }          # fields after the command name, which may hold spaces
read -r _state _ppid pgid _rest <<<"$stat"
echo "$pgid" >"$tmp/head.pgid"

{
  echo "RAY_ADDRESS=127.0.0.1:$port"
  echo "RAY_DASHBOARD=http://127.0.0.1:$dash_port"
  echo "BATON_RAY_TMPDIR=$tmp"
} | tee "$tmp/head.env"
