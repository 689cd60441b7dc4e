#!/usr/bin/env bash
# make fuzz-smoke: builds the libFuzzer harnesses with clang into BUILD, regenerates their seed
# corpora from the I/O tests (YAQA_FUZZ_SEED_DIR), then runs each harness for SECONDS.
# Usage: fuzz/smoke.sh [BUILD=build-fuzz] [SECONDS=60] [JOBS=nproc] [TESTS=build]
# Seeds come from the test binaries of the TESTS build dir when it has them (make test's; any
# compiler will do, they only write files), else yaqa_tests_io / yaqa_tests_cli are built in BUILD.
# Corpora grow in BUILD/corpus/<parser> across runs; a finding is saved under BUILD/findings/ and
# makes the script fail (reproduce: BUILD/bin/fuzz_<parser> <file>).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
seconds=${2:-60}
jobs=${3:-$(nproc)}
harnesses=(safetensors npy gguf cli)
tests=${4:-build}

t0=$(date +%s)
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" -DYAQA_BUILD_FUZZERS=ON -DYAQA_NATIVE=OFF \
  -DYAQA_ENABLE_CUDA=OFF -DYAQA_BUILD_BENCHMARKS=OFF -DYAQA_BUILD_EXAMPLES=OFF -DYAQA_INSTALL=OFF >/dev/null
seed_targets=()
[[ -x "$tests/bin/yaqa_tests_io" && -x "$tests/bin/yaqa_tests_cli" ]] || { tests="$build"; seed_targets=(yaqa_tests_io yaqa_tests_cli); }
cmake --build "$build" -j "$jobs" --target "${seed_targets[@]}" "${harnesses[@]/#/fuzz_}"
t1=$(date +%s)

# Seeds: every file the safetensors, npy, GGUF and imatrix tests build, valid and corrupt, and
# every command line the CLI tests parse.
rm -rf "$build/seeds"
YAQA_FUZZ_SEED_DIR="$build/seeds" "$tests/bin/yaqa_tests_io" "[safetensors],[npy],[gguf],[imatrix]" >/dev/null
YAQA_FUZZ_SEED_DIR="$build/seeds" "$tests/bin/yaqa_tests_cli" "[cli]" >/dev/null  # command lines
mkdir -p "$build/seeds/cli"
printf '\001fc.weight\nfc.weight.b.H_in\nfc.weight.b.H_out\nfc.weight.H\nfc.weight.a.x.H_in' >"$build/seeds/cli/names"
mkdir -p "$build/findings"
t2=$(date +%s)

# The harnesses run JOBS at a time (each is one process), so a 2-core machine fuzzes two at once.
fuzz_one() {
  local h=$1 log="$build/fuzz_$1.log"
  mkdir -p "$build/corpus/$h"
  local seeds corpus
  seeds=$(ls "$build/seeds/$h" | wc -l)
  corpus=$(ls "$build/corpus/$h" | wc -l)
  if "$build/bin/fuzz_$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/findings/$h-" "$build/corpus/$h" "$build/seeds/$h" >"$log" 2>&1; then
    { echo "fuzz-smoke: fuzz_$h for ${seconds} s ($seeds seeds, $corpus corpus files)"
      grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" "$log" | sed 's/^/  /'
    } >"$log.summary"
  else
    { echo "fuzz-smoke: fuzz_$h FOUND A PROBLEM (log: $log; inputs in $build/findings):"
      grep -E -A12 "ERROR|==[0-9]+==|uncaught|invariant broken|deadly signal" "$log" | head -n 40
    } >"$log.summary"
    return 1
  fi
}
status=0
pids=()
for h in "${harnesses[@]}"; do
  fuzz_one "$h" &
  pids+=($!)
  if (( ${#pids[@]} >= jobs )); then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
for h in "${harnesses[@]}"; do
  if grep -q "FOUND A PROBLEM" "$build/fuzz_$h.log.summary"; then cat "$build/fuzz_$h.log.summary" >&2; else cat "$build/fuzz_$h.log.summary"; fi
done
t3=$(date +%s)
echo "fuzz-smoke: build $((t1 - t0)) s, seeds $((t2 - t1)) s, fuzzing $((t3 - t2)) s"
exit $status
