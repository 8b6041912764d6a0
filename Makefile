# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python
PIP = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install install-extra install-dev test test-fast demo clean-demo

# Never replace a torch that is already there (Colab's CUDA build); install the CPU 2.13.0 only where none is.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) -r requirements.txt

install-extra: install
	$(PIP) -r requirements-extra.txt

install-dev: install
	$(PIP) -r requirements-dev.txt

test: install-dev
	$(PYTHON) -m pytest -q

test-fast: install-dev
	$(PYTHON) -m pytest -q -m "not slow"

# The seed's journey end to end on an embedded corpus: clean -> tokenize -> train -> generate, about
# 7-8 minutes on a 2-core AMD EPYC CPU. Rerunning reuses what is built and resumes an interrupted training.
# Options through DEMO_ARGS, e.g. make demo DEMO_ARGS="--minutes 4" (see python demo.py --help).
DEMO_ARGS ?=
demo: install-extra
	$(PYTHON) demo.py $(DEMO_ARGS)

clean-demo:
	rm -rf demo_out
