# Two commands do everything on a fresh Debian machine:
#   make test   install missing packages, configure, build everything (CUDA too when found), ctest
#   make demo   install missing packages, configure, build and run the end-to-end demo
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release -DYAQA_NATIVE=ON

.PHONY: all deps configure build test demo bench clean

all: build

deps:
	@bash tools/install_deps.sh $(DEPS_FLAGS)

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target yaqa-demo
	$(BUILD)/bin/yaqa-demo

bench: build
	@mkdir -p bench/results
	$(BUILD)/bin/yaqa-bench --benchmark_out=bench/results/cpu.json --benchmark_out_format=json

clean:
	rm -rf $(BUILD)
