# `make test` and `make demo` build .venv from requirements.txt on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the PyTorch + transformers reference (fixtures, benchmarks); never a dependency of ms_gpt
REF_VENV ?= .venv-ref
REF_PY := $(REF_VENV)/bin/python
# the newest MindSpore the registry serves, for `make test-compat` (requirements.txt keeps the reproducible pin)
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_MINDSPORE ?= 2.10.0
export GLOG_v := 3

.PHONY: test test-slow test-compat demo notebooks venv ref compat-venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# pytest exits 5 when it collects nothing; that is a failure here, as is any other non-zero code.
test: venv
	$(PY) -m ruff check .  # the whole repository, notebooks' code cells included
	$(PY) -m pytest -q -rs -p no:cacheprovider --durations=15

test-slow: venv
	$(PY) -m pytest -q -p no:cacheprovider -m slow

# The suite's core on the newest MindSpore (see COMPAT_MINDSPORE): model, checkpoints, tokenizers, generation, engine,
# the pretraining and fine-tuning CLIs and the mindnlp compat layer. Notebooks and slow runs are left to `make test`.
COMPAT_TESTS := tests/test_model.py tests/test_checkpoint.py tests/test_tokenizers.py tests/test_generation.py \
	tests/test_engine.py tests/test_pretrain.py tests/test_finetune.py tests/test_compat_mindnlp.py
test-compat: compat-venv
	$(COMPAT_PY) -c "import mindspore; print('MindSpore', mindspore.__version__)"
	$(COMPAT_PY) -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

demo: venv
	$(PY) -m ms_gpt.demo

# every notebook executed at SMALL settings, one at a time, saved with its outputs and a stamp of what produced them
# (tests/test_notebooks.py fails when a notebook's code no longer matches its outputs)
notebooks: venv
	$(PY) notebooks/execute.py

compat-venv: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip
	sed 's/^mindspore==.*/mindspore==$(COMPAT_MINDSPORE)/' requirements.txt > $(COMPAT_VENV)/requirements.txt
	$(COMPAT_PY) -m pip install -q -r $(COMPAT_VENV)/requirements.txt
	$(COMPAT_PY) -m pip install -q --no-deps -e .
	touch $@

ref: $(REF_VENV)/.installed

$(REF_VENV)/.installed: benchmarks/requirements-ref.txt
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_PY) -m pip install -q --upgrade pip
	$(REF_PY) -m pip install -q -r benchmarks/requirements-ref.txt
	touch $@

bench: venv ref
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_decode_window.py
	$(PY) benchmarks/bench_engine.py --shapes both
	$(PY) benchmarks/bench_scale.py --ref_python $(REF_PY)
	$(PY) benchmarks/bench_serve.py --ref_python $(REF_PY)

clean:
	rm -rf $(VENV) $(REF_VENV) $(COMPAT_VENV) runs .pytest_cache
