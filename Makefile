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

# README "PyTorch users": a PyTorch ResNet (ONNX) converted, checked on the host and rpi4-aarch64 under qemu, merged
# with the example's Keras words model, evaluated and benchmarked; figures in $(EXAMPLE_OUT)/pytorch (needs torch)
.PHONY: pytorch-demo
pytorch-demo: setup
	$(PYTHON) -m examples.pytorch_fashion.demo --out $(EXAMPLE_OUT)/pytorch

# examples/residual_pair: a keras.applications MobileNetV2 and a ResNet-8 trained, merged at accu and light from
# .keras and .tflite, evaluated and benchmarked against float and int8 TFLite; figures in $(EXAMPLE_OUT)/residual_pair
.PHONY: residual-pair
residual-pair: setup
	$(PYTHON) -m examples.residual_pair.run --data $(EXAMPLE_OUT) --out $(EXAMPLE_OUT)/residual_pair

test-c:
	cmake -S . -B $(BUILD)/c-host -DCMAKE_BUILD_TYPE=Release -DEM_BUILD_TESTS=ON >/dev/null
	cmake --build $(BUILD)/c-host -j 2
	ctest --test-dir $(BUILD)/c-host --output-on-failure

test-py:
	$(PYTHON) -m pytest -q -m "not slow" tests

test: setup
	$(MAKE) test-c
	$(MAKE) test-robustness
	$(MAKE) test-py

test-all: setup test-c
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf $(BUILD) *.egg-info

# --- boards (boards/*.toml): cross builds, and the C tests under qemu-user -------------------------
# make boards | make board BOARD=rpi3-armhf | make test-c-board BOARD=rpi4-aarch64 | make test-boards
BOARD ?= rpi4-aarch64
.PHONY: boards board test-c-board test-boards

boards:
	$(PYTHON) -m edgemerge.cli boards

board:
	$(PYTHON) -m edgemerge.cli build --board $(BOARD) -o $(BUILD)/$(BOARD)

test-c-board:
	$(PYTHON) -m edgemerge.cli build --board $(BOARD) -o $(BUILD)/$(BOARD) --ctest

test-boards:
	$(PYTHON) -m pytest -q tests/deploy/test_boards.py

# flash / export-c (README "Flash"): against a private sshd on 127.0.0.1, and the export-c header built
# for the host and for rpi4-aarch64 under qemu
.PHONY: test-flash
test-flash:
	$(PYTHON) -m pytest -q tests/deploy/test_flash.py

# --- robustness (runtime_c/fuzz/README.md): sanitizers, valgrind, fuzzing ---------------------------
# test-sanitize   runtime_c + its C tests with ASan+UBSan (-fno-sanitize-recover=all) in their own build
#                 folder: ctest (corrupt files, allocation failures, limits, threads, corpus replay,
#                 mutation sweep), em_run on a whole model and on every corrupt seed
# test-valgrind   memcheck on one em_run of a whole model (the Release build)
# test-fuzz       the libFuzzer target (FUZZ_SECONDS) and the atheris fuzzer (PYFUZZ_SECONDS); a crash
#                 leaves its input in $(FUZZ_BUILD)/artifacts: copy it to runtime_c/fuzz/regressions/
# fuzz-long       the 10-minute local run of both fuzzers; fuzz-corpus rewrites the seed corpus
SANITIZE_BUILD ?= $(BUILD)/sanitize
FUZZ_BUILD ?= $(BUILD)/fuzz
FUZZ_SECONDS ?= 60
PYFUZZ_SECONDS ?= 30
FUZZ_CORPUS = runtime_c/fuzz/corpus
FUZZ_MODEL = $(FUZZ_CORPUS)/valid-merged-lenet-mobile.emm
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
.PHONY: test-robustness test-sanitize test-valgrind test-fuzz fuzz-long fuzz-corpus

test-robustness: test-sanitize test-valgrind test-fuzz

test-sanitize:
	cmake -S runtime_c -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEM_SANITIZE=ON \
	      -DEM_BUILD_TESTS=ON >/dev/null
	cmake --build $(SANITIZE_BUILD) -j 2
	$(SANITIZER_ENV) ctest --test-dir $(SANITIZE_BUILD) --output-on-failure
	head -c 1024 /dev/zero > $(SANITIZE_BUILD)/a.f32 && head -c 3072 /dev/zero > $(SANITIZE_BUILD)/b.f32
	$(SANITIZER_ENV) $(SANITIZE_BUILD)/em_run $(FUZZ_MODEL) --info >/dev/null
	$(SANITIZER_ENV) $(SANITIZE_BUILD)/em_run $(FUZZ_MODEL) --task a --input $(SANITIZE_BUILD)/a.f32 \
	      --output $(SANITIZE_BUILD)/a.out --runs 3
	$(SANITIZER_ENV) $(SANITIZE_BUILD)/em_run $(FUZZ_MODEL) --task b --input $(SANITIZE_BUILD)/b.f32 \
	      --output $(SANITIZE_BUILD)/b.out --runs 3
	@for f in $(FUZZ_CORPUS)/corrupt-*.emm; do \
	  $(SANITIZER_ENV) $(SANITIZE_BUILD)/em_run $$f --info >/dev/null 2>$(SANITIZE_BUILD)/corrupt.err; rc=$$?; \
	  if [ $$rc -ne 1 ]; then cat $(SANITIZE_BUILD)/corrupt.err; echo "em_run $$f: exit $$rc, expected 1"; exit 1; fi; \
	done; echo "test-sanitize: em_run refused every corrupt seed cleanly"

test-valgrind:
	cmake -S . -B $(BUILD)/c-host -DCMAKE_BUILD_TYPE=Release -DEM_BUILD_TESTS=ON >/dev/null
	cmake --build $(BUILD)/c-host -j 2 --target em_run
	head -c 3072 /dev/zero > $(BUILD)/c-host/b.f32
	valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	  $(BUILD)/c-host/runtime_c/em_run $(FUZZ_MODEL) --task b --input $(BUILD)/c-host/b.f32 \
	  --output $(BUILD)/c-host/b.out --runs 2
	@echo "test-valgrind: memcheck clean"

test-fuzz:
	cmake -S runtime_c -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DEM_SANITIZE=ON -DEM_FUZZ=ON -DEM_BUILD_TESTS=OFF >/dev/null
	cmake --build $(FUZZ_BUILD) -j 2 --target em_fuzz_load_run
	rm -rf $(FUZZ_BUILD)/new $(FUZZ_BUILD)/pynew && mkdir -p $(FUZZ_BUILD)/new $(FUZZ_BUILD)/pynew $(FUZZ_BUILD)/artifacts
	$(SANITIZER_ENV) $(FUZZ_BUILD)/fuzz/em_fuzz_load_run $(FUZZ_BUILD)/new $(FUZZ_CORPUS) runtime_c/fuzz/regressions \
	  -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/ > $(FUZZ_BUILD)/c.log 2>&1 \
	  || { tail -60 $(FUZZ_BUILD)/c.log; exit 1; }
	@grep -E "^Done|DONE" $(FUZZ_BUILD)/c.log | sed 's/^/C fuzzer: /'
	$(PYTHON) tests/fuzz_emm.py $(FUZZ_BUILD)/pynew $(FUZZ_CORPUS) runtime_c/fuzz/regressions \
	  -max_total_time=$(PYFUZZ_SECONDS) -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/ > $(FUZZ_BUILD)/py.log 2>&1 \
	  || { tail -60 $(FUZZ_BUILD)/py.log; exit 1; }
	@grep -E "^Done|fuzz_emm:" $(FUZZ_BUILD)/py.log | tail -2 | sed 's/^/Python fuzzer: /'

fuzz-long:
	$(MAKE) test-fuzz FUZZ_SECONDS=600 PYFUZZ_SECONDS=600

fuzz-corpus:
	$(PYTHON) runtime_c/fuzz/make_corpus.py

# --- modelled ARM cost (../shared/armperf) of the example models, into README.md's "ARM (modelled)" section
# make armperf ARMPERF_MODELS=DIR   (DIR: light.emm, accu.emm, light4.emm and the original .tflite / test .npz)
# ARMPERF_PRESETS picks the merged files (DIR/PRESET.emm), ARMPERF_JSON keeps armperf's JSON per file there.
ARMPERF_MODELS ?= $(EXAMPLE_OUT)
ARMPERF_PRESETS ?= light,accu,light4
ARMPERF_JSON ?=
.PHONY: armperf
armperf:
	$(PYTHON) tools/armperf_table.py --models $(ARMPERF_MODELS) --presets $(ARMPERF_PRESETS) \
	    $(if $(ARMPERF_JSON),--json-dir $(ARMPERF_JSON))
