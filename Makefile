# sttd: `make serve` runs the server, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
HOST ?= 127.0.0.1
PORT ?= 8000
STT_WEB_UI ?= true

.PHONY: serve test lint bench-load clean

# The server needs only the embedded default; the suite needs every CPU-testable extra
# (qwen3-reference pins the CPU build of torch, which machines of this project carry).
$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[whisper]'
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[whisper,kaldi,qwen3-remote,qwen3-reference,test,bench]'
	touch $(STAMP) $(SERVE_STAMP)

# kaldi-gstreamer-server's own client.py runs under Python 2.7 with ws4py 0.3.2 (pyenv has
# 2.7.18 on this project's machines); virtualenv < 20.22 is the last that creates 2.7 envs.
PY27 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/2.7*/bin/python2.7) $(shell command -v python2.7 2>/dev/null))
PY27_ENV := $(VENV)/py27

$(PY27_ENV)/.installed: | $(STAMP)
	@if [ -n "$(PY27)" ]; then \
		$(BIN)/python -m pip install --quiet 'virtualenv<20.22' && \
		$(BIN)/virtualenv --quiet -p $(PY27) $(PY27_ENV) && \
		$(PY27_ENV)/bin/pip install --quiet --disable-pip-version-check ws4py==0.3.2 && \
		touch $@; \
	else echo "no Python 2.7: the kaldi-gstreamer-server client.py tests will skip"; fi

serve: $(SERVE_STAMP)
	STT_WEB_UI=$(STT_WEB_UI) $(BIN)/sttd serve --host $(HOST) --port $(PORT)

test: $(STAMP) $(PY27_ENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check .

bench-load: $(STAMP)
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
