# jaxdd: the two commands a newcomer runs are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Main job on the embedded default dataset (scikit-learn's 8x8 digits): distil with DM, evaluate, write artifacts.
demo: $(STAMP)
	$(BIN)/jaxdd distill --method dm --dataset digits --ipc 5 --iterations 200 --real-per-class 64 --seed 0 --out runs/demo
	$(BIN)/jaxdd evaluate runs/demo --models 4 --epochs 300 --baseline

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf runs .pytest_cache
