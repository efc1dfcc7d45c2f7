# The two set-up commands of README.md: `make train` and `make test`.
# Both create the virtual environment (.venv) and get Fashion-MNIST first, if they are missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data train test benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian's dataset-fashion-mnist where apt exists; elsewhere trainlab downloads it on first use.
data:
	@if [ -f $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(dir $(FASHION_MNIST))"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST: no apt here; trainlab will download it into ./data on first use"; fi

train: setup data
	$(BIN)/trainlab train

test: setup data
	$(BIN)/python -m pytest

benchmark: setup data
	$(BIN)/python benchmarks/suite.py

clean:
	rm -rf $(VENV) .pytest_cache
