# `make run`, `make test` and `make bench` set everything up themselves on a fresh machine:
# the virtualenv (.venv), the pinned stack (requirements/lock.txt) and Horovod 0.28.1 built from
# source against the installed TensorFlow, its wheel kept in .cache/wheels for the next setup.
#
#   make run            the train-alexnet Prefect flow (built-in sample data if none configured)
#   make test           the whole test suite (what .ci/run calls)
#   make bench          the benchmarks (benchmarks/RESULTS.md)
#   make bench-scale    25,000 images through `dvc repro` (benchmarks/SCALE.md; tens of minutes)
#   make serve          serve the train-alexnet deployment (needs `prefect server start`)
#   make TF=gpu ...     use tensorflow[and-cuda] instead of tensorflow-cpu

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
TF ?= cpu
VENV := .venv
PY := $(VENV)/bin/python
HOROVOD_VERSION := 0.28.1
WHEELS := .cache/wheels/$(TF)
STAMP := $(VENV)/.setup-$(TF)

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 1

.PHONY: setup run test bench bench-scale serve lock clean postgres sshd

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c requirements/lock.txt -e ".[$(TF),s3,test]"
	$(MAKE) --no-print-directory horovod
	touch $@

# Horovod must be compiled against the TensorFlow it runs with (no binary wheels exist). The
# build takes a few minutes on 2 cores, so the wheel is cached and reused.
horovod:
	@if ! ls $(WHEELS)/horovod-$(HOROVOD_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Building Horovod $(HOROVOD_VERSION) with TensorFlow + Gloo (a few minutes)..."; \
	  $(PY) -m pip install -q "cmake>=3.13,<4"; \
	  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
	  MAKEFLAGS=-j$$(nproc) $(PY) -m pip wheel -q --no-cache-dir --no-build-isolation --no-deps \
	    -w $(WHEELS) horovod==$(HOROVOD_VERSION); \
	fi
	$(PY) -m pip install -q -c requirements/lock.txt --force-reinstall --no-deps \
	  $(WHEELS)/horovod-$(HOROVOD_VERSION)-*.whl
	$(PY) -m pip install -q -c requirements/lock.txt cloudpickle psutil pyyaml packaging
	@# Output captured first: `horovodrun ... | grep -q` under pipefail fails at random when grep
	@# exits on its match and horovodrun, still writing, dies of the closed pipe.
	@build=$$($(VENV)/bin/horovodrun --check-build 2>/dev/null) || true; \
	  for need in TensorFlow Gloo; do \
	    grep -q "\[X\] $$need" <<<"$$build" \
	      || { echo "Horovod was built without $$need support:"; echo "$$build"; exit 1; }; \
	  done

run: setup
	$(PY) -m flows.train_alexnet

# Two pytest workers (pytest-xdist), each taking whole test files (module fixtures run once):
# most tests spend much of their time waiting on the processes they start (servers, dvc,
# horovodrun), so two keep both cores busy. `make test TEST_JOBS=0` runs them one by one.
TEST_JOBS ?= 2

test: setup postgres sshd
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

# tests/server/test_work_pool.py starts a throwaway PostgreSQL from the distribution's server
# binaries (as the `postgres` user when run as root). On a fresh Debian/Ubuntu machine, as root,
# install them; otherwise those tests say why they skip.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing PostgreSQL (apt-get install postgresql) for the server tests..."; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	  else \
	    echo "PostgreSQL's initdb not found and not root: the PostgreSQL server tests will skip"; \
	  fi; \
	fi

# tests/distributed/test_hosts.py launches a Horovod rank over SSH through a throwaway OpenSSH
# server it starts on 127.0.0.2 (its own config and keys, stopped by pid). On a fresh
# Debian/Ubuntu machine, as root, install the server binary; otherwise those tests say why they
# skip. The package's scripts would start the distribution's own sshd on 0.0.0.0:22 outside a
# container: a policy-rc.d that refuses every service start (exit 101, Debian's policy-rc.d
# interface, honoured by invoke-rc.d and deb-systemd-invoke) is in place during the install, and
# removed afterwards if this created it.
sshd:
	@if ! [ -x /usr/sbin/sshd ] && ! command -v sshd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing OpenSSH's server (apt-get install openssh-server, not started) for the SSH test..."; \
	    if ! [ -e /usr/sbin/policy-rc.d ]; then \
	      trap 'rm -f /usr/sbin/policy-rc.d' EXIT; trap 'exit 130' INT TERM; \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d; \
	    fi; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server; \
	  else \
	    echo "OpenSSH's sshd not found and not root: the SSH launch tests will skip"; \
	  fi; \
	fi

bench: setup
	$(PY) -m benchmarks.run

bench-scale: setup
	$(PY) -m benchmarks.scale

serve: setup
	$(PY) -m flows.deploy

# Re-resolve requirements/lock.txt from pyproject.toml in a scratch virtualenv.
lock:
	rm -rf .cache/lock-venv && $(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q ".[cpu,s3,test]"
	{ sed -n '1,3p' requirements/lock.txt; .cache/lock-venv/bin/pip freeze --exclude-editable \
	  | grep -viE '^(horovod|alexnet-pipeline)[=@ ]'; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt

clean:
	rm -rf $(VENV) .pytest_cache
