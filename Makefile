# ganlab — every target sets up .venv/ first when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch (~200 MB), never the multi-GB CUDA one: the +cpu wheel where pip
# already finds it (a local wheel or index), else from PyTorch's CPU index.
TORCH_SPEC  ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
DEMO_DIR    ?= outputs/demo

.PHONY: install test test-slow test-cluster demo bench simulate lint gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "$(TORCH_SPEC)" --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e ".[dev,ray,slurm]"
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core this process may use (affinity and cgroup quota, as a run's
# thread budget counts them; pytest-xdist), at most 8; each worker and the processes it starts
# keep to their own core (tests/conftest.py). TEST_WORKERS=1: one process, no workers.
TEST_WORKERS ?= $(shell $(PY) -c "from ganlab.cores import available_cores as c; print(min(c(), 8))" 2>/dev/null || echo 1)
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal) \
		-m "not slow and not cuda and not cluster"

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not cuda and not cluster"

# Real schedulers (root; Debian packages installed where missing): SLURM with accounting and
# preemption on two local nodes, and a two-node Ray cluster, started and stopped by
# tests/cluster/daemons.py around the tests of tests/cluster.
CLUSTER_STATE ?= /tmp/ganlab-cluster
test-cluster: $(STAMP)
	$(PY) tests/cluster/daemons.py install
	status=0; \
	GANLAB_CLUSTER_STATE=$(CLUSTER_STATE) $(PY) -m pytest -m cluster tests/cluster \
		-p no:cacheprovider || status=$$?; \
	$(PY) tests/cluster/daemons.py down $(CLUSTER_STATE); exit $$status

# The `quick` preset (ring8, k = 1, 2, 5 D steps per G step, seeds in stages, CPU, two runs
# at a time with their share of the cores each), then the comparer's report over it; the
# answer comes first, the report's path last. Run again, it resumes (an interrupted demo
# goes on; a finished one only prints its report): `rm -rf outputs/demo` starts afresh.
demo: $(STAMP)
	$(PY) -m ganlab.train -m experiment=quick hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m ganlab.compare $(DEMO_DIR)

bench: $(STAMP)
	$(PY) -m ganlab.bench --device cpu --vectorize 1,8,32 --threads 2

# The MNIST feature classifier whose weights ship in ganlab/evaluate/weights/ (with their
# sha256, recipe, training-data hash and test accuracy): trained on one thread, so the same
# weights at any thread setting. Other weights are another extractor identity, and scores
# made with it are never compared with scores of the old one. MNIST is read from data.root
# ($GANLAB_DATA_ROOT, else ~/.cache/ganlab/data, downloaded when missing) or DATA_ROOT=...
.PHONY: classifier
classifier: $(STAMP)
	$(PY) -W "ignore::RuntimeWarning:runpy" -m ganlab.evaluate.features train-classifier \
		--dataset mnist $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

# The sequential rule in the loop on synthetic studies: error rates, coverage, seeds saved.
simulate: $(STAMP)
	$(PY) -m ganlab.compare.simulate --studies 1000

lint: $(STAMP)
	$(PY) -m ruff check ganlab tests
	$(VENV)/bin/lint-imports

# On a CUDA machine: the CUDA tests, then the bench on the GPU (with 1, 4 and 8 runs packed
# on it through joblib, 1, 8 and 32 seeds stacked in one model, and CUDA graphs on/off);
# its table prints last and is kept in outputs/gpu-check.txt.
# Where torch and the rest are installed already (no .venv/ wanted), run it as
# `make gpu-check PY=python3 GPU_CHECK_NEEDS=` from a checkout on PYTHONPATH.
GPU_CHECK_NEEDS ?= $(STAMP)
gpu-check: $(GPU_CHECK_NEEDS)
	$(PY) -m pytest -m cuda -q
	$(PY) -m ganlab.bench --device cuda --pack 1,4,8 --vectorize 1,8,32 \
		--table outputs/gpu-check.txt

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
