# The two commands of the README. Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

## Main job: build the ESC-50 spec and run the emitted script's smoke run on synthetic data.
demo: $(STAMP)
	$(VENV)/bin/sigmae-gen build specs/esc50_audiomae.yaml
	cd $$(mktemp -d) && $(abspath $(PY)) -I $(CURDIR)/build/esc50_audiomae/esc50_audiomae.py --smoke

## The whole test suite (toolkit, catalog, emitted outputs, notebooks).
test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/generator.py
	$(PY) bench/models.py
	$(PY) bench/frontend.py
	$(PY) bench/train.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
