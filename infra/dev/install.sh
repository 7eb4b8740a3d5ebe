#!/usr/bin/env bash
# Install packages into a venv: with uv where it can (seconds for this tree, pip takes minutes: most of the set-up
# of `make test` on a fresh machine), else with pip. uv reads no pip.conf, so it is handed pip's own find-links and
# indexes (here the CPU torch wheel lies in a find-links folder) and, like pip, takes the best match over all of them.
# usage: infra/dev/install.sh VENV_PYTHON PIP_INSTALL_ARGS...
set -uo pipefail
py="$1"; shift
pipcfg() { "$py" -m pip config get "global.$1" 2>/dev/null || true; }
args=()
for l in ${PIP_FIND_LINKS:-$(pipcfg find-links)}; do args+=(--find-links "$l"); done
index="${PIP_INDEX_URL:-$(pipcfg index-url)}"
[ -n "$index" ] && args+=(--default-index "$index")
for u in ${PIP_EXTRA_INDEX_URL:-$(pipcfg extra-index-url)}; do args+=(--index "$u"); done
if "$py" -m pip install -q uv >/dev/null 2>&1 \
    && "$(dirname "$py")/uv" pip install -q --python "$py" --index-strategy unsafe-best-match "${args[@]}" "$@"; then
  exit 0
fi
echo "install.sh: uv unavailable or failed; installing with pip" >&2
exec "$py" -m pip install -q "$@"
