#!/bin/sh
# python/pip_install: `pip install ./python` into a fresh venv that sees the system's numpy (and
# torch), then a smoke test of the installed package from outside the checkout.
# Usage: pip_install.sh PYTHON VENV_DIR REPO_ROOT. Exit 77 (skipped) when no venv can be made.
set -eu
py=$1 venv=$2 root=$3
rm -rf "$venv"
"$py" -m venv --system-site-packages "$venv" || { echo "SKIP: $py -m venv failed (python3-venv)"; exit 77; }
start=$(date +%s)
"$venv/bin/pip" install --disable-pip-version-check "$root/python"
echo "pip install ./python: $(( $(date +%s) - start )) s"
cd /
"$venv/bin/python" - "$root" <<'PY'
import re, sys
import numpy as np
import yaqa
ver = re.search(r"project\(yaqa VERSION ([0-9.]+)", open(sys.argv[1] + "/CMakeLists.txt").read()).group(1)
assert yaqa.__version__ == ver, (yaqa.__version__, ver)
from importlib.metadata import version
assert version("yaqa") == ver, version("yaqa")
acc = yaqa.SecondMoment(5)
x = np.random.default_rng(0).standard_normal((9, 5))
acc.add(x)
assert np.allclose(acc.sum(), x.T @ x)
r = yaqa.quantize_layer(np.ones((16, 16), np.float32), np.eye(16), method="ldlq")
print("installed yaqa", yaqa.__version__, "from", yaqa.__file__)
PY
