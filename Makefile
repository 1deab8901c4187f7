# Two entry points for a fresh machine with only python3 (see README.md):
#   make demo   – install into .venv, run the periodic study on the built-in demo clip
#   make test   – install into .venv, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test ui bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch torchaudio
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vampstudy run periodic --backend reference

test: $(STAMP)
	$(BIN)/python -m pytest -q

ui: $(STAMP)
	$(BIN)/vampstudy ui

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reference.py
	$(BIN)/python benchmarks/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
