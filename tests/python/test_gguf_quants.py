#!/usr/bin/env python3
"""Our GGUF quantizers against gguf-py (PyPI `gguf`, pinned as in test_gguf_interop.py).

Usage: test_gguf_quants.py YAQA_GGUF_QUANT_TOOL VENV_DIR

For every type the tool lists (`types`), several shapes and three modes (no importance + RTN,
importance + RTN, importance + LDLQ with error feedback), the tool writes a GGUF holding the input,
the encoded tensor and our dequantized weights. gguf.quants.dequantize of the encoded tensor must
equal our dequantized weights bit for bit. Where gguf-py has a reference quantizer (Q8_0, Q4_0,
Q5_0), our round-to-nearest without importance must also produce its bytes exactly.
Exits 77 (skipped) only when gguf cannot be installed.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_gguf_interop import ensure_gguf, finish  # noqa: E402

# gguf-py 0.19.0 has quantize_blocks for these; its results are llama.cpp's reference rounding.
REFERENCE_QUANTIZERS = {"Q8_0", "Q4_0", "Q5_0"}


def run(exe, *args):
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{exe} {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def main():
    exe, venv = sys.argv[1], sys.argv[2]
    ensure_gguf(venv, __file__)
    import numpy as np
    from gguf import GGUFReader, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    types = run(exe, "types").split()
    if not types:
        raise AssertionError("the tool lists no GGUF quantizer types")
    failures = []
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in types:
            qt = GGMLQuantizationType[name]
            block = 256 if name.endswith("_K") else 32
            shapes = [(5, block), (3, 2 * block), (7, 768 if block == 256 else 96)]
            for rows, cols in shapes:
                for mode in (("uniform", "rtn"), ("importance", "rtn"), ("importance", "ldlq")):
                    seed = 1000 * rows + cols + 7 * checked
                    path = os.path.join(tmp, f"{name}_{rows}x{cols}_{mode[0]}_{mode[1]}.gguf")
                    run(exe, "write", name, rows, cols, seed, path, *mode)
                    t = {x.name: x for x in GGUFReader(path).tensors}
                    what = f"{name} {rows}x{cols} {'+'.join(mode)}"
                    if t["q"].tensor_type != qt:
                        failures.append(f"{what}: tensor type {t['q'].tensor_type!r}, expected {qt!r}")
                        continue
                    got = dequantize(np.asarray(t["q"].data), qt).reshape(rows, cols).astype(np.float32)
                    ours = np.asarray(t["recon"].data, dtype=np.float32).reshape(rows, cols)
                    if not np.array_equal(got.view(np.uint32), ours.view(np.uint32)):
                        bad = np.argwhere(got.view(np.uint32) != ours.view(np.uint32))
                        i, j = bad[0]
                        failures.append(f"{what}: gguf-py dequantizes {len(bad)} values differently, first "
                                        f"[{i},{j}]: gguf-py {got[i, j]!r}, yaqa {ours[i, j]!r}")
                    if name in REFERENCE_QUANTIZERS and mode == ("uniform", "rtn"):
                        w = np.asarray(t["w"].data, dtype=np.float32).reshape(rows, cols)
                        ref = quantize(w, qt).reshape(-1).view(np.uint8)
                        mine = np.asarray(t["q"].data).reshape(-1).view(np.uint8)
                        if not np.array_equal(ref, mine):
                            k = int(np.argmax(ref != mine))
                            failures.append(f"{what}: bytes differ from gguf.quants.quantize ({int((ref != mine).sum())}"
                                            f" of {ref.size}, first at byte {k}: {ref[k]} vs {mine[k]})")
                    checked += 1
    finish(failures, f"{checked} tensors checked over {len(types)} types")


if __name__ == "__main__":
    main()
