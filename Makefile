# edgecl — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q
DATA   ?= ../shared/data

.PHONY: help install dev wheel test test-slow lint format demo bench bench-peers bench-scaling bundle bundle-check bench-extractors eval-mnist eval-imu fuzz soak crash-test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.device: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[dev,plot,host,sign,fleet]'
	touch $@ $(VENV)/.device

install: $(VENV)/.device  ## install edgecl (device dependencies only) into .venv

dev: $(VENV)/.dev  ## install edgecl with test, lint and plot tools

wheel: | $(VENV)/bin/python  ## build dist/edgecl-<version>-py3-none-any.whl (then: pip install dist/edgecl-*.whl)
	rm -rf build/lib build/bdist.*  # setuptools builds in-tree: stale copies of deleted modules would ship
	$(PY) -m pip --disable-pip-version-check wheel . --no-deps -w dist

lint: dev  ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: dev  ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: dev lint  ## install dev deps, lint, run the test suite (slow tests skipped)
	$(PY) -m pytest -m "not slow" -q

test-slow: dev  ## the slow tests only (full-dataset checks)
	$(PY) -m pytest -m slow -q

demo: install  ## simulated smartwatch → edgecl run → live accuracy on 2 users it never saw (~1 min)
	$(VENV)/bin/edgecl demo $(DEMO_ARGS)

bench: dev  ## learner micro-benchmarks (µs per learn/predict)
	$(PY) tools/bench_learner.py

bench-peers: dev  ## edgecl vs torch, river, scikit-learn on the same streams (installs [peers])
	$(PIP) install -e '.[peers]'
	$(PY) tools/bench_peers.py --data $(DATA) --json tools/figures/peers.json --plot tools/figures/peers.png

bench-scaling: dev  ## learn/predict time and state bytes vs dim, classes, buffer size
	$(PY) tools/bench_scaling.py --json tools/figures/scaling.json --plot tools/figures/scaling.png

eval-mnist: dev  ## split-MNIST class-IL, raw pixels, every head (needs ../shared/data)
	$(PY) tools/report_eval.py mnist --data $(DATA)

eval-imu: dev  ## smartwatch IMU class-IL and domain-IL, every head
	$(PY) tools/report_eval.py imu

bundle: dev  ## rebuild the shipped default bundle edgecl/bundles/default (pretrain + export, deterministic)
	$(PY) tools/build_bundle.py --out edgecl/bundles/default

bundle-check: dev  ## rebuild the default bundle in a temp dir and compare sha256s with the shipped one
	$(PY) tools/build_bundle.py --check

bench-extractors: dev  ## onnxruntime vs torch eager latency per extractor (1 thread)
	$(PY) tools/bench_extractors.py

fuzz: dev  ## protocol + daemon message fuzzer, 10^6 seeded messages (exact reject counters)
	$(PY) tools/fuzz_protocol.py --messages 1000000 --json tools/figures/fuzz.json

soak: dev  ## 10^6 samples through edgecl run: RSS drift and latency over time
	$(PY) tools/soak.py --samples 1000000 --json tools/figures/soak.json --plot tools/figures/soak.png

crash-test: dev  ## kill -9 edgecl run 100 times (often mid-checkpoint) + a full disk; no corrupt state
	$(PY) tools/crash_test.py --kills 100 --json tools/figures/crash.json
	$(PY) tools/replug.py --link pty --cycles 10 --json tools/figures/replug-pty.json
	$(PY) tools/replug.py --link tcp --cycles 10 --json tools/figures/replug-tcp.json

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
