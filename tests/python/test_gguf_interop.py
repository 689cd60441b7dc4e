#!/usr/bin/env python3
"""GGUF interop with the reference Python implementation, gguf-py (PyPI `gguf`, pinned to 0.19.0).

Usage: test_gguf_interop.py YAQA_GGUF_TOOL VENV_DIR

(a) yaqa writes (yaqa_gguf_tool write: every KV type, F32/F16/Q8_0/BF16/I32 tensors, alignments 32
    and 64) -> gguf.GGUFReader reads it: keys in order, value types, values, tensor types, shapes,
    bytes, and gguf.quants.dequantize of the Q8_0 tensor against the values yaqa encoded.
(b) gguf.GGUFWriter writes (scalars, strings, arrays incl. of strings and nested, several tensors
    incl. Q8_0 from gguf.quants.quantize, custom alignment 64) -> yaqa reads it (yaqa_gguf_tool dump
    prints JSON): the same keys, types, values, tensors and bytes; and yaqa's copy_from + write
    (yaqa_gguf_tool copy) reproduces gguf-py's file byte for byte.

gguf-py is installed with `pip install --no-deps gguf==0.19.0` into VENV_DIR (a venv with the
system site packages: numpy and PyYAML come from Debian, never from pip). When it cannot be
installed (no network, no venv module, no numpy/yaml) the test exits 77: CTest reports it skipped.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

GGUF_VERSION = "0.19.0"
SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def ensure_gguf(venv_dir, script=None):
    """Re-executes `script` (default: this one) in VENV_DIR's python, creating the venv and installing gguf
    first."""
    inside = os.environ.get("YAQA_GGUF_VENV_ACTIVE") == "1"
    try:
        import gguf  # noqa: F401
        from importlib.metadata import version
        if version("gguf") == GGUF_VERSION:
            return
    except ImportError:
        pass
    if inside:
        sys.exit(f"gguf=={GGUF_VERSION} is still not importable in {sys.executable}")
    for mod, pkg in (("numpy", "python3-numpy"), ("yaml", "python3-yaml")):
        try:
            __import__(mod)
        except ImportError:
            skip(f"{sys.executable} cannot import {mod}: install {pkg} (tools/install_deps.sh --with-python)")
    py = os.path.join(venv_dir, "bin", "python")
    if not os.path.exists(py):
        r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv_dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            skip(f"cannot create a venv in {venv_dir} (Debian: python3-venv): {r.stderr.strip()[-500:]}")
    r = subprocess.run([py, "-c", f"import importlib.metadata as m; assert m.version('gguf') == '{GGUF_VERSION}'"],
                       capture_output=True)
    if r.returncode != 0:
        r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
                            f"gguf=={GGUF_VERSION}"], capture_output=True, text=True)
        if r.returncode != 0:
            skip(f"cannot install gguf=={GGUF_VERSION} with pip into {venv_dir}: {r.stderr.strip()[-500:]}")
    env = dict(os.environ, YAQA_GGUF_VENV_ACTIVE="1")
    sys.stdout.flush()
    os.execve(py, [py, os.path.abspath(script or __file__)] + sys.argv[1:], env)


def finish(failures, summary):
    """Prints each failure and the summary, then exits 1 if anything failed, else 0."""
    for f in failures:
        print("FAIL:", f)
    print(f"{summary}, {len(failures)} failures")
    sys.exit(1 if failures else 0)


def f32(x):
    """x rounded to float32, as a Python float."""
    import numpy as np
    return float(np.float32(x))


def flatten(v):
    return [y for x in v for y in flatten(x)] if isinstance(v, list) else [v]


def same(a, b, what):
    if isinstance(a, float) or isinstance(b, float):
        ok = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise AssertionError(f"{what}: lengths {len(a)} != {len(b)}: {a!r} vs {b!r}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{what}[{i}]")
        return
    else:
        ok = a == b and type(a) is type(b)
    if not ok:
        raise AssertionError(f"{what}: {a!r} != {b!r}")


def tool(exe, *args):
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{exe} {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def yaqa_writes_gguf_py_reads(exe, tmp, alignment):
    import numpy as np
    from gguf import GGUFReader, GGMLQuantizationType, GGUFValueType
    from gguf.quants import dequantize
    path = os.path.join(tmp, f"yaqa_{alignment}.gguf")
    want = tool(exe, "write", path, str(alignment))
    r = GGUFReader(path)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    same(keys, [kv["key"] for kv in want["kv"]], "keys in file order")
    same(int(r.fields["GGUF.version"].contents()), 3, "version")
    for kv in want["kv"]:
        f = r.fields[kv["key"]]
        what = f"key {kv['key']}"
        same(int(f.types[0]), kv["type"], what + " type")
        if kv["type"] == GGUFValueType.ARRAY:
            # gguf-py records element types from the first element only; an empty array's is in its header.
            etype = int(f.types[1]) if len(f.types) > 1 else int(f.parts[3][0])
            same(etype, kv["element_type"], what + " element type")
            got, exp = f.contents(), kv["value"]
            if kv["element_type"] == GGUFValueType.ARRAY:
                got, exp = flatten(got), flatten(exp)  # gguf-py flattens nested arrays
            if kv["element_type"] == GGUFValueType.FLOAT32:
                got = [f32(x) for x in got]
            if kv["element_type"] == GGUFValueType.BOOL:
                got = [bool(x) for x in got]
            same([float(x) if isinstance(y, float) else x for x, y in zip(got, exp)], exp, what)
        else:
            got = f.contents()
            if isinstance(kv["value"], float):
                got = float(got)
            elif isinstance(kv["value"], bool):
                got = bool(got)
            same(got, kv["value"], what)
    same(len(r.tensors), len(want["tensors"]), "tensor count")
    for t, w in zip(r.tensors, want["tensors"]):
        what = f"tensor {w['name']}"
        same(t.name, w["name"], what + " name")
        same(int(t.tensor_type), w["type"], what + " type")
        same([int(x) for x in t.shape], w["ne"], what + " ne")
        same(t.data.tobytes().hex(), w["hex"], what + " bytes")
        same(t.data_offset % alignment, 0, what + " offset alignment")
        if "values" in w and t.tensor_type != GGMLQuantizationType.BF16:
            same([float(x) for x in np.asarray(t.data, dtype=np.float64).ravel()], w["values"], what + " values")
            same(list(t.data.shape), w["ne"][::-1], what + " numpy shape")
        if t.tensor_type == GGMLQuantizationType.BF16:
            same([float(x) for x in dequantize(t.data, t.tensor_type).astype(np.float64).ravel()], w["values"],
                 what + " values")
        if t.tensor_type == GGMLQuantizationType.Q8_0:
            deq = dequantize(t.data, t.tensor_type)
            same(list(deq.shape), w["ne"][::-1], what + " dequantized shape")
            same([float(x) for x in deq.astype(np.float64).ravel()], [f32(x) for x in w["dequantized"]],
                 what + " dequantized")
            err = np.abs(deq.ravel() - np.asarray(w["original"], dtype=np.float32))
            assert err.max() <= 0.6 * 7 / 127, f"{what}: Q8_0 error {err.max()} too large"
    print(f"(a) alignment {alignment}: gguf.GGUFReader read {len(keys)} keys and {len(r.tensors)} tensors as written")


def gguf_py_writes_yaqa_reads(exe, tmp):
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType, GGUFValueType
    path = os.path.join(tmp, "gguf_py.gguf")
    w = gguf.GGUFWriter(path, arch="yaqa-test")
    w.add_custom_alignment(64)
    want_kv = [("general.architecture", GGUFValueType.STRING, None, "yaqa-test"),
               ("general.alignment", GGUFValueType.UINT32, None, 64)]

    def add(key, vtype, value, sub=None):
        w.add_key_value(key, value, vtype, sub)
        want_kv.append((key, vtype, sub, value))

    add("t.u8", GGUFValueType.UINT8, 200)
    add("t.i8", GGUFValueType.INT8, -100)
    add("t.u16", GGUFValueType.UINT16, 60000)
    add("t.i16", GGUFValueType.INT16, -30000)
    add("t.u32", GGUFValueType.UINT32, 4000000000)
    add("t.i32", GGUFValueType.INT32, -2000000000)
    add("t.f32", GGUFValueType.FLOAT32, 0.1)
    add("t.bool", GGUFValueType.BOOL, True)
    add("t.string", GGUFValueType.STRING, "gguf-py \u2713")
    add("t.u64", GGUFValueType.UINT64, 2**64 - 1)
    add("t.i64", GGUFValueType.INT64, -(2**63))
    add("t.f64", GGUFValueType.FLOAT64, math.pi)
    add("t.arr_i32", GGUFValueType.ARRAY, [1, -2, 3])
    add("t.arr_f32", GGUFValueType.ARRAY, [0.5, 0.1])
    add("t.arr_u64", GGUFValueType.ARRAY, [1, 2**40], GGUFValueType.UINT64)
    add("t.arr_str", GGUFValueType.ARRAY, ["a", "bc", ""])
    add("t.arr_bool", GGUFValueType.ARRAY, [False, True])
    add("t.arr_nested", GGUFValueType.ARRAY, [[1, 2], [3]])
    rng = np.random.default_rng(7)
    tensors = [("w.f32", rng.standard_normal((3, 5)).astype(np.float32), None),
               ("w.f16", rng.standard_normal((7,)).astype(np.float16), None),
               ("w.i32", np.arange(-3, 3, dtype=np.int32).reshape(2, 3), None)]
    qsrc = rng.standard_normal((2, 64)).astype(np.float32)
    tensors.append(("w.q8_0", gguf.quants.quantize(qsrc, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0))
    for name, arr, raw in tensors:
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    got = tool(exe, "dump", path)
    same(got["version"], 3, "version")
    same(got["alignment"], 64, "alignment")
    same([kv["key"] for kv in got["kv"]], [k for k, *_ in want_kv], "keys in file order")
    for kv, (key, vtype, sub, value) in zip(got["kv"], want_kv):
        what = f"key {key}"
        if vtype == GGUFValueType.ARRAY:
            etype = sub if sub is not None else GGUFValueType.get_type(value[0])
            same(kv["element_type"], int(etype), what + " element type")
            if etype == GGUFValueType.FLOAT32:
                value = [f32(x) for x in value]
        elif vtype == GGUFValueType.FLOAT32:
            value = f32(value)
        same(kv["type"], int(vtype), what + " type")
        same(kv["value"], value, what)
    same([t["name"] for t in got["tensors"]], [n for n, *_ in tensors], "tensor names")
    types = {"w.f32": GGMLQuantizationType.F32, "w.f16": GGMLQuantizationType.F16,
             "w.i32": GGMLQuantizationType.I32, "w.q8_0": GGMLQuantizationType.Q8_0}
    for t, (name, arr, raw) in zip(got["tensors"], tensors):
        what = f"tensor {name}"
        same(t["type"], int(types[name]), what + " type")
        same(t["hex"], arr.tobytes().hex(), what + " bytes")
        same(t["offset"] % 64, 0, what + " offset alignment")
        if raw is None:
            same(t["ne"], list(arr.shape)[::-1], what + " ne")
            same(t["values"], [float(x) for x in arr.astype(np.float64).ravel()], what + " values")
        else:
            same(t["ne"], [64, 2], what + " ne")
    copy = os.path.join(tmp, "copy.gguf")
    r = subprocess.run([exe, "copy", path, copy], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(path, "rb") as a, open(copy, "rb") as b:
        assert a.read() == b.read(), "gguf_writer::copy_from did not reproduce gguf.GGUFWriter's file byte for byte"
    print(f"(b) yaqa read gguf.GGUFWriter's file: {len(got['kv'])} keys, {len(got['tensors'])} tensors, alignment 64;"
          " copy_from + write reproduced it byte for byte")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: test_gguf_interop.py YAQA_GGUF_TOOL VENV_DIR")
    exe, venv_dir = sys.argv[1], sys.argv[2]
    ensure_gguf(venv_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for alignment in (32, 64):
            yaqa_writes_gguf_py_reads(exe, tmp, alignment)
        gguf_py_writes_yaqa_reads(exe, tmp)
    print("gguf interop: OK")


if __name__ == "__main__":
    main()
