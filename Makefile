# `make test` and `make demo` build .venv from requirements.txt on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the PyTorch + transformers reference (fixtures, benchmarks); never a dependency of ms_gpt
REF_VENV ?= .venv-ref
REF_PY := $(REF_VENV)/bin/python
export GLOG_v := 3

.PHONY: test test-slow demo venv ref bench clean

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

ref: $(REF_VENV)/.installed

$(REF_VENV)/.installed: benchmarks/requirements-ref.txt
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_PY) -m pip install -q --upgrade pip
	$(REF_PY) -m pip install -q -r benchmarks/requirements-ref.txt
	touch $@

bench: venv ref
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_scale.py --ref_python $(REF_PY)

clean:
	rm -rf $(VENV) $(REF_VENV) runs .pytest_cache
