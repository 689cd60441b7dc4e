# Two commands do everything on a fresh Debian machine:
#   make test   install missing packages, configure, build everything (CUDA too when found), ctest
#   make demo   install missing packages, configure, build and run the end-to-end demo
#   make cuda-build  the CUDA tests and benchmarks (make test builds them only where a GPU is
#                    visible), then the CUDA ctests (skipped without a GPU); CI runs it
#   make sanitize    the CPU unit tests under ASan+UBSan (build-asan; docs/reliability.md)
#   make fuzz-smoke  the libFuzzer harnesses, FUZZ_SECONDS each (build-fuzz; needs clang)
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release -DYAQA_NATIVE=ON

.PHONY: all deps configure build test cuda-build demo bench clean sanitize fuzz-smoke

all: build

deps:
	@bash tools/install_deps.sh $(DEPS_FLAGS)

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: DEPS_FLAGS = --with-python
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

cuda-build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DYAQA_ENABLE_CUDA=ON -DYAQA_BUILD_CUDA_TESTS=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L cuda

demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target yaqa-demo
	$(BUILD)/bin/yaqa-demo

bench: build
	@mkdir -p bench/results
	$(BUILD)/bin/yaqa-bench --benchmark_out=bench/results/cpu.json --benchmark_out_format=json

# Sanitized unit tests: builds yaqa_tests_<area> for each of SANITIZE_AREAS (areas without tests
# are skipped) and runs their ctests ("<area>/..."). Any ASan/UBSan report fails the test. The
# default subset and its timing are in docs/reliability.md; SANITIZE_AREAS=all for every area.
# clang at -O0: GCC's ASan+UBSan instrumentation of this template-heavy code compiles 3-4x slower
# (the sanitized CLI and I/O tests: about 1100 CPU-s with GCC 12, 340 with clang 14).
ASAN_BUILD ?= build-asan
SANITIZE_AREAS ?= io cli core
SANITIZE_FLAGS ?= -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1" \
  -DYAQA_SANITIZE=ON -DYAQA_NATIVE=OFF -DYAQA_ENABLE_CUDA=OFF -DYAQA_BUILD_BENCHMARKS=OFF \
  -DYAQA_BUILD_EXAMPLES=OFF -DYAQA_INSTALL=OFF
san_all := $(patsubst tests/%/,%,$(sort $(dir $(wildcard tests/*/test_*.cpp))))
san_areas = $(if $(filter all,$(SANITIZE_AREAS)),$(san_all),$(filter $(san_all),$(SANITIZE_AREAS)))
san_empty :=
san_regex = ^($(subst $(san_empty) $(san_empty),|,$(strip $(san_areas))))/
sanitize: DEPS_FLAGS = --with-clang
sanitize: deps
	@cmake -S . -B $(ASAN_BUILD) $(SANITIZE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target $(addprefix yaqa_tests_,$(san_areas)) \
	  $(if $(filter cli,$(san_areas)),yaqa-quantize)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest -L cpu --output-on-failure -j $(JOBS) -R '$(san_regex)'

# libFuzzer smoke run: builds fuzz/ with clang, regenerates the seed corpora from tests/io, runs
# each harness for FUZZ_SECONDS. Found crashes are left in $(FUZZ_BUILD)/findings.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz-smoke:
	@bash tools/install_deps.sh --with-clang
	@bash fuzz/smoke.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(JOBS) $(BUILD)

clean:
	rm -rf $(BUILD)
