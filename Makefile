# Every target sets itself up: `make test` and `make quickstart` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint quickstart quickstart-ne16 bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,deploy,log]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check mpsctl tests bench scripts

quickstart: $(STAMP)
	bash scripts/quickstart.sh

quickstart-ne16: $(STAMP)
	bash scripts/quickstart-ne16.sh

bench: $(STAMP)
	$(PY) bench/search_overhead.py --model resnet8 --type per_layer
	$(PY) bench/search_overhead.py --model resnet8 --type per_channel
	$(PY) bench/exactness.py
	$(PY) bench/sweep_jobs.py

clean:
	rm -rf runs .pytest_cache
