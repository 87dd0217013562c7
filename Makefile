# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PY := .venv/bin/python

.PHONY: install demo test lint clean

install:
	bash tools/install.sh

demo: install
	$(PY) -m unimoco.cli pipeline --config-file configs/pipeline/shapes_demo.yaml

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf output
