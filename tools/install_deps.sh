#!/usr/bin/env bash
# Installs the Debian packages yaqa needs, only those missing. Non-interactive.
# Usage: tools/install_deps.sh [--with-python] [--with-clang]
#   --with-python: python3-torch for the interop tests, with OpenBLAS (without libopenblas0-pthread
#     Debian's torch and numpy fall back to the reference BLAS: 1.6 vs 75 GFLOP/s measured), and
#     python3-yaml + python3-venv for python/gguf_interop (which pip-installs gguf-py itself, --no-deps,
#     into a venv under the build directory; gguf's tqdm is imported only for progress bars), and
#     python3-dev + python3-pytest for the Python package (python/: its extension is built with
#     nanobind, pip-installed pinned into <build>/python-venv at configure time; docs/python.md);
#   --with-clang: clang, its sanitizer runtimes (libFuzzer among them) and OpenMP (make sanitize,
#     make fuzz-smoke); --with-fuzz is the same set
# Not root and something missing: prints the exact apt-get command and exits 1.
set -euo pipefail

pkgs=(cmake make g++ libeigen3-dev catch2 libbenchmark-dev nlohmann-json3-dev libcli11-dev gnuplot-nox libopenmpi-dev openmpi-bin)
for flag in "$@"; do
  case "$flag" in
    --with-python) pkgs+=(python3 python3-numpy python3-torch libopenblas0-pthread python3-yaml python3-venv python3-dev python3-pytest) ;;
    --with-clang|--with-fuzz) pkgs+=(clang libclang-rt-14-dev libomp-dev) ;;
    *) echo "install_deps.sh: unknown option '$flag'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    cmd="sudo sh -c '$cmd'"
  else
    echo "yaqa: missing Debian packages: ${missing[*]}" >&2
    echo "yaqa: run as root:  $cmd" >&2
    exit 1
  fi
fi
echo "yaqa: installing ${missing[*]}" >&2
eval "$cmd" >/tmp/yaqa-apt.log 2>&1 || { tail -n 30 /tmp/yaqa-apt.log >&2; exit 1; }
