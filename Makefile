# `make test` and `make demo` build .venv from requirements.txt on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GLOG_v := 3

.PHONY: test test-slow demo venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# pytest exits 5 when it collects nothing; that is a failure here, as is any other non-zero code.
test: venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

test-slow: venv
	$(PY) -m pytest -q -p no:cacheprovider -m slow

demo: venv
	$(PY) -m ms_gpt.demo

bench: venv
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
