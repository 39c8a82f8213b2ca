# Setup is done by the targets themselves: `make search` and `make test` create the venv first.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= 2.13.0
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(TORCH)

.PHONY: venv search test gpu-check bench-table bench-replay clean

venv: $(STAMP)

# torch is pinned in the same pip command as everything else, so no dependency can pull
# a newer (CUDA) build. Re-run only when pyproject.toml or TORCH changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH)" -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The default search sized to about 5 minutes on 2 CPU cores: a 240 s wall budget for the trials (the
# running one finishes, then the latency pass and the report); rerunning it resumes the same study.
# Without --timeout, `nas-search --space resunet` trains all 20 trials (8.5 min on that machine).
search: venv
	$(VENV)/bin/nas-search --space resunet --timeout 240

test: venv
	$(PY) -m pytest -q

# Every CUDA path measured in one run (--budget-s 420); docs/gpu_check.md (also: on the lent GPU machine)
gpu-check: venv
	$(PY) benchmarks/gpu_check.py --out runs/gpu_check

# The tabulated benchmark (docs/benchmark.md): train what the table lacks on both cores (resumable; a kill
# loses only the two trainings in flight), then replay 8 search arms x 30 seeds on it. The real-data table:
# make bench-table BENCH_TASK=cvc BENCH_COUNT=150
BENCH_TASK  ?= synthetic
BENCH_COUNT ?= 500
bench-table: venv
	$(PY) benchmarks/nasbench.py build --task $(BENCH_TASK) --count $(BENCH_COUNT) --workers 2

bench-replay: venv
	$(PY) benchmarks/nasbench_replay.py --seeds 30 --workers 2

clean:
	rm -rf $(VENV) runs .pytest_cache
