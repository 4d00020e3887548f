# The two commands of the README. Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv sysdeps bench bench-gpu bench-gpu-dry bench-data clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

## Debian packages some tests make real data with: espeak-ng (spoken words) and sox (the WAV
## variants real tools write). Installed when missing and apt-get can run; otherwise those
## tests skip (and fail under CI=1).
sysdeps:
	@if command -v espeak-ng >/dev/null && command -v sox >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -qq espeak-ng sox >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng sox >/dev/null 2>&1; } || \
	  echo "note: could not install espeak-ng and sox; the tests that need them skip"; \
	else echo "note: espeak-ng and sox are missing (apt-get install espeak-ng sox); the tests that need them skip"; fi

## Main job: build the ESC-50 spec and run the emitted script's smoke run on synthetic data.
demo: $(STAMP)
	$(VENV)/bin/sigmae-gen build specs/esc50_audiomae.yaml
	cd $$(mktemp -d) && $(abspath $(PY)) -I $(CURDIR)/build/esc50_audiomae/esc50_audiomae.py --smoke

## The whole test suite (toolkit, catalog, emitted outputs, notebooks).
test: $(STAMP) sysdeps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/generator.py
	$(PY) bench/models.py
	$(PY) bench/frontend.py
	$(PY) bench/train.py

## The one-shot GPU check (<= 8 minutes on one H100/H200; needs a CUDA build of torch in the
## venv); bench-gpu-dry runs the same code paths on CPU at tiny sizes. JSON under bench/results/.
bench-gpu: $(STAMP)
	$(PY) bench/gpu.py

bench-gpu-dry: $(STAMP)
	$(PY) bench/gpu.py --cpu-dry-run

## Folder of WAV files vs tar shards: samples/s cold and warm, 0/2/4 workers, data wait.
bench-data: $(STAMP)
	$(PY) bench/data.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
