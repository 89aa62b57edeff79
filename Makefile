# Two commands on a fresh machine: `make demo` (main job on the bundled example) and `make test`.
# Both run the idempotent set-up first.
PYTHON ?= python3
BUILD ?= build
EXAMPLE_OUT ?= examples/build

.PHONY: setup demo test test-c test-py test-all clean

setup:
	bash tools/setup.sh

demo: setup
	$(PYTHON) -m examples.fashion_words.demo --out $(EXAMPLE_OUT)

test-c:
	cmake -S . -B $(BUILD)/host -DCMAKE_BUILD_TYPE=Release -DEM_BUILD_TESTS=ON >/dev/null
	cmake --build $(BUILD)/host -j 2
	ctest --test-dir $(BUILD)/host --output-on-failure

test-py:
	$(PYTHON) -m pytest -q -m "not slow" tests

test: setup
	$(MAKE) test-c
	$(MAKE) test-py

test-all: setup test-c
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf $(BUILD) *.egg-info
