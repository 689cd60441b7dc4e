#!/usr/bin/env python3
"""GPTQ and compressed-tensors checkpoints written by yaqa, read back the way the loaders read them.

Usage: test_gptq_checkpoint.py YAQA_CKPT_TOOL VENV_DIR

yaqa_ckpt_tool writes seeded int_grid layers in both layouts (include/yaqa/io/gptq_checkpoint.hpp)
with reference tensors from yaqa's dequantize_gptq / dequantize_compressed_tensors and yaqa's own
reconstruction. Then:

(a) GPTQ layout: a plain torch implementation of GPTQ's dequantization, written here from the
    documented packing (AutoGPTQ / exllama: qweight [n*bits/32, m] packed along the input dim, 32/bits
    values per int32 lowest bits first, 3 bits as 32 values in 3 words; qzeros [G, m*bits/32] packed the
    same way along the output dim and stored minus one; W = scales[g_idx] * (q - (qzero + 1))), in fp16
    and in fp32: equal to yaqa's values exactly (storage / exact), and within the fp16 scale rounding
    (2^-11 relative) of yaqa's reconstruction.
(b) compressed-tensors layout: the package's own PackedQuantizationCompressor.decompress
    (unpack_from_int32 + dequantize, compressed-tensors pinned to 0.20.1): equal to yaqa's values
    exactly, and the package's pack_to_int32 of the unpacked codes / zero points reproduces yaqa's
    words bit for bit.

compressed-tensors is installed with `pip install --no-deps compressed-tensors==0.20.1` into VENV_DIR
(a venv with the system site packages: torch and numpy come from Debian, never from pip). When it
cannot be installed the test exits 77 (CTest: skipped).

Why the package is not imported whole: its __init__ imports transformers, pydantic 2, loguru and
torch >= 2.10 APIs (float8 dtypes), while Debian 12 ships torch 1.13 and pydantic 1. The modules that
do the work -- compressors/pack_quantized/{base,helpers}.py and quantization/lifecycle/{forward,
forward_helpers}.py -- are loaded from the installed package files unchanged; only what they import
for other purposes (the pydantic models, logger, registry decorator, triton placeholders, range
computation used when quantizing) is replaced by minimal stand-ins below.
"""
import enum
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import types

CT_VERSION = "0.20.1"
SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def ct_root():
    """Directory of the installed compressed_tensors package (without importing it)."""
    import importlib.util
    spec = importlib.util.find_spec("compressed_tensors")
    return None if spec is None else list(spec.submodule_search_locations)[0]


def ensure_ct(venv_dir):
    inside = os.environ.get("YAQA_CT_VENV_ACTIVE") == "1"
    try:
        from importlib.metadata import version
        if version("compressed-tensors") == CT_VERSION and ct_root():
            return
    except Exception:
        pass
    if inside:
        sys.exit(f"compressed-tensors=={CT_VERSION} is still not installed in {sys.executable}")
    for mod, pkg in (("numpy", "python3-numpy"), ("torch", "python3-torch")):
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
    r = subprocess.run([py, "-c", "import importlib.metadata as m; "
                        f"assert m.version('compressed-tensors') == '{CT_VERSION}'"], capture_output=True)
    if r.returncode != 0:
        r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
                            f"compressed-tensors=={CT_VERSION}"], capture_output=True, text=True)
        if r.returncode != 0:
            skip(f"cannot install compressed-tensors=={CT_VERSION} with pip into {venv_dir}: "
                 f"{r.stderr.strip()[-500:]}")
    env = dict(os.environ, YAQA_CT_VENV_ACTIVE="1")
    sys.stdout.flush()
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)


# ---- compressed-tensors modules, loaded from the package files ---------------------------------

class _Anything:
    """Stand-in for names the loaded modules import but the decompress path never uses: any
    attribute is another stand-in; calling one with a single callable returns it (a decorator)."""
    def __getattr__(self, k):
        return _Anything()

    def __call__(self, *a, **k):
        if len(a) == 1 and callable(a[0]) and not k:
            return a[0]
        return _Anything()

    def __or__(self, other):  # `QuantizationArgs | None` in annotations
        return self

    __ror__ = __or__


def load_ct():
    import torch
    root = ct_root()

    def package(name, path):
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, *path)]
        sys.modules[name] = m
        return m

    def stub(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class QuantizationStrategy(str, enum.Enum):  # values as the package serializes them
        TENSOR = "tensor"
        CHANNEL = "channel"
        GROUP = "group"
        BLOCK = "block"
        TOKEN = "token"
        TENSOR_GROUP = "tensor_group"
        ATTN_HEAD = "attn_head"

    class QuantizationType(str, enum.Enum):
        INT = "int"
        FLOAT = "float"

    class BaseCompressor:
        @classmethod
        def register(cls, name=None, **kw):
            return lambda c: c

    def getattr_chain(obj, chain, *default):
        for a in chain.split("."):
            if not hasattr(obj, a):
                if default:
                    return default[0]
                raise AttributeError(a)
            obj = getattr(obj, a)
        return obj

    any_ = _Anything()
    package("compressed_tensors", [])
    package("compressed_tensors.compressors", ["compressors"])
    package("compressed_tensors.compressors.pack_quantized", ["compressors", "pack_quantized"])
    quant = package("compressed_tensors.quantization", ["quantization"])
    quant.QuantizationScheme = any_
    quant.QuantizationStrategy = QuantizationStrategy
    quant.QuantizationType = QuantizationType
    package("compressed_tensors.quantization.lifecycle", ["quantization", "lifecycle"])
    stub("compressed_tensors.compressors.base", BaseCompressor=BaseCompressor,
         COMPRESSIBLE_MODULE_TYPES=(torch.nn.Linear,))
    stub("compressed_tensors.config", CompressionFormat=any_)
    stub("compressed_tensors.logger", logger=any_)
    stub("compressed_tensors.utils", TensorStateDict=dict, getattr_chain=getattr_chain, patch_attr=any_)
    stub("compressed_tensors.utils.impl_backend", ImplBackend=any_)
    stub("compressed_tensors.utils.triton", tl=any_, triton=any_, triton_req=any_)
    stub("compressed_tensors.quantization.quant_args", QuantizationArgs=any_, QuantizationStrategy=QuantizationStrategy,
         QuantizationType=QuantizationType, DynamicType=any_, round_to_quantized_type_args=any_)
    stub("compressed_tensors.quantization.quant_config", QuantizationStatus=any_)
    stub("compressed_tensors.quantization.quant_scheme", QuantizationScheme=any_)
    # calculate_range gives the clamp range of quantize(); dequantize receives it and ignores it.
    stub("compressed_tensors.quantization.utils", calculate_range=lambda args, device: (None, None),
         compute_dynamic_scales_and_zp=any_, maybe_pad_tensor_for_block_quant=any_)
    stub("compressed_tensors.quantization.utils.fp4_utils", _round_to_fp4=any_)
    stub("compressed_tensors.quantization.utils.fp6_utils", _round_to_fp6=any_)
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized import helpers
    return PackedQuantizationCompressor, helpers


# ---- safetensors, read by hand (no safetensors package in Debian 12) ----------------------------

def read_safetensors(path):
    import torch
    dtypes = {"I32": torch.int32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16,
              "F32": torch.float32, "F64": torch.float64}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out, meta = {}, header.pop("__metadata__", {})
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = bytearray(data[base + b:base + end])
        t = torch.frombuffer(raw, dtype=dtypes[e["dtype"]]) if raw else torch.empty(0, dtype=dtypes[e["dtype"]])
        out[name] = (e["dtype"], t.reshape(e["shape"]))
    return out, meta


# ---- GPTQ dequantization, from the documented layout -------------------------------------------

def gptq_unpack(packed, bits, count):
    """packed: int32 [words, cols], values packed along dim 0 -> int32 [count, cols]."""
    import torch
    words, cols = packed.shape
    if bits in (2, 4, 8):
        shifts = torch.arange(0, 32, bits, dtype=torch.int32)
        v = (packed.unsqueeze(1) >> shifts.view(1, -1, 1)) & ((1 << bits) - 1)
        return v.reshape(words * (32 // bits), cols)[:count]
    assert bits == 3 and words % 3 == 0
    w = packed.reshape(words // 3, 3, cols).to(torch.int64) & 0xFFFFFFFF  # unsigned words
    w0, w1, w2 = w[:, 0], w[:, 1], w[:, 2]
    vals = [(w0 >> (3 * k)) & 7 for k in range(10)]                       # values 0..9
    vals.append(((w0 >> 30) & 3) | ((w1 & 1) << 2))                        # value 10 straddles
    vals += [(w1 >> (3 * k + 1)) & 7 for k in range(10)]                  # values 11..20
    vals.append(((w1 >> 31) & 1) | ((w2 & 3) << 1))                        # value 21 straddles
    vals += [(w2 >> (3 * k + 2)) & 7 for k in range(10)]                  # values 22..31
    return torch.stack(vals, dim=1).reshape(words // 3 * 32, cols)[:count].to(torch.int32)


def gptq_dequantize(t, bits, m, n, compute_dtype):
    """W [m, n] = scales[g_idx] * (q - (qzeros + 1)), computed in compute_dtype like AutoGPTQ's torch path."""
    q = gptq_unpack(t["qweight"], bits, n)                    # [n, m]
    z = gptq_unpack(t["qzeros"].t().contiguous(), bits, m).t() + 1  # [G, m]
    g = t["g_idx"].long()
    w = t["scales"].to(compute_dtype)[g] * (q - z[g]).to(compute_dtype)
    return w.t().contiguous(), q.t(), z


def max_rel(a, b):
    import torch
    a, b = a.double(), b.double()
    nz = b != 0
    r = torch.zeros_like(a)
    r[nz] = (a[nz] - b[nz]).abs() / b[nz].abs()
    r[~nz] = a[~nz].abs()
    return float(r.max())


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_gptq(case, failures):
    import torch
    tensors, meta = read_safetensors(case["file"])
    ref, _ = read_safetensors(case["ref"])
    m, n, bits, name = case["m"], case["n"], case["bits"], case["layer"]
    gs = case["group_size"] if case["group_size"] > 0 else n
    G = n // gs
    expect = {f"{name}.qweight": ("I32", [n * bits // 32, m]), f"{name}.qzeros": ("I32", [G, m * bits // 32]),
              f"{name}.scales": ("F16", [G, m]), f"{name}.g_idx": ("I32", [n]), "model.norm.weight": ("F32", [n, 1])}
    check(set(tensors) == set(expect), f"tensor names {sorted(tensors)}")
    for k, (dt, shape) in expect.items():
        check(tensors[k][0] == dt and list(tensors[k][1].shape) == shape,
              f"{k}: {tensors[k][0]} {list(tensors[k][1].shape)}, expected {dt} {shape}")
    check(meta.get("format") == "pt", f"metadata {meta}")
    check(bool((tensors["model.norm.weight"][1] == 1.5).all()), "pass-through tensor changed")
    t = {k.split(".")[-1]: v for k, (_, v) in tensors.items() if k.startswith(name)}
    if not case["act_order"]:
        check(torch.equal(t["g_idx"].long(), torch.arange(n) // gs), "g_idx != j / group_size")
    w16, q, z = gptq_dequantize(t, bits, m, n, torch.float16)
    w32, _, _ = gptq_dequantize(t, bits, m, n, torch.float32)
    check(int(q.min()) >= 0 and int(q.max()) < (1 << bits), "codes out of range")
    if case["sym"]:
        check(bool((z == (1 << (bits - 1))).all()), "symmetric zero points != 2^(bits-1)")
    check(torch.equal(w16.float(), ref["storage"][1]), "fp16 dequantization != yaqa dequantize_gptq (storage)")
    check(torch.equal(w32, ref["exact"][1]), "fp32 dequantization != yaqa dequantize_gptq (exact)")
    rel = max_rel(w32, ref["recon"][1])
    check(rel <= 2.0 ** -11, f"|dequant - recon| / |recon| = {rel} > 2^-11")
    cfg = case["quantization_config"]
    check(cfg["quant_method"] == "gptq" and cfg["checkpoint_format"] == "gptq" and cfg["bits"] == bits
          and cfg["sym"] == case["sym"] and cfg["group_size"] == (case["group_size"] if case["group_size"] > 0 else -1)
          and cfg["desc_act"] == (case["act_order"] and case["group_size"] > 0), f"quantization_config {cfg}")
    return rel


def check_ct(case, ct, failures):
    import torch
    Compressor, helpers = ct
    tensors, meta = read_safetensors(case["file"])
    ref, _ = read_safetensors(case["ref"])
    m, n, bits, name, sym = case["m"], case["n"], case["bits"], case["layer"], case["sym"]
    G = n // case["group_size"] if case["group_size"] > 0 else 1
    expect = {f"{name}.weight_packed": ("I32", [m, math.ceil(n * bits / 32)]),
              f"{name}.weight_scale": (case["scale_type"], [m, G]), f"{name}.weight_shape": ("I64", [2]),
              "model.norm.weight": ("F32", [n, 1])}
    if not sym:
        expect[f"{name}.weight_zero_point"] = ("I32", [math.ceil(m * bits / 32), G])
    check(set(tensors) == set(expect), f"tensor names {sorted(tensors)}")
    for k, (dt, shape) in expect.items():
        check(tensors[k][0] == dt and list(tensors[k][1].shape) == shape,
              f"{k}: {tensors[k][0]} {list(tensors[k][1].shape)}, expected {dt} {shape}")
    t = {k[len(name) + 1:]: v for k, (_, v) in tensors.items() if k.startswith(name)}
    check(t["weight_shape"].tolist() == [m, n], f"weight_shape {t['weight_shape'].tolist()}")
    cfg = case["quantization_config"]
    wcfg = cfg["config_groups"]["group_0"]["weights"]
    check(cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
          and cfg["quantization_status"] == "compressed" and cfg["ignore"] == ["lm_head"]
          and cfg["config_groups"]["group_0"]["targets"] == ["Linear"], f"quantization_config {cfg}")
    check(wcfg["num_bits"] == bits and wcfg["type"] == "int" and wcfg["symmetric"] == sym
          and wcfg["strategy"] == ("group" if G > 1 or case["group_size"] > 0 else "channel")
          and wcfg["group_size"] == (case["group_size"] if case["group_size"] > 0 else None), f"weights {wcfg}")
    scheme = types.SimpleNamespace(weights=types.SimpleNamespace(
        num_bits=wcfg["num_bits"], symmetric=wcfg["symmetric"], strategy=wcfg["strategy"],
        group_size=wcfg["group_size"], type=wcfg["type"]), input_activations=None)
    # The package's decompression, in the scale's own type and with the scale widened to fp32.
    out = Compressor.decompress(dict(t), scheme)
    check(set(out) >= {"weight"} and "weight_packed" not in out, f"decompress returned {sorted(out)}")
    check(out["weight"].dtype == t["weight_scale"].dtype, f"decompressed dtype {out['weight'].dtype}")
    check(torch.equal(out["weight"].float(), ref["storage"][1]),
          "package decompress != yaqa dequantize_compressed_tensors (storage)")
    t32 = dict(t, weight_scale=t["weight_scale"].float())
    w32 = Compressor.decompress(t32, scheme)["weight"]
    check(torch.equal(w32, ref["exact"][1]), "package decompress (fp32 scale) != yaqa dequantize (exact)")
    rel = max_rel(w32, ref["recon"][1])
    unit = 2.0 ** -8 if case["scale_type"] == "BF16" else 2.0 ** -11
    check(rel <= unit, f"|dequant - recon| / |recon| = {rel} > {unit}")
    # The package's packer reproduces yaqa's words from the unpacked signed codes / zero points.
    codes = helpers.unpack_from_int32(t["weight_packed"], bits, torch.Size([m, n]))
    check(torch.equal(helpers.pack_to_int32(codes, bits), t["weight_packed"]), "pack_to_int32(codes) != weight_packed")
    if not sym:
        zp = helpers.unpack_from_int32(t["weight_zero_point"], bits, torch.Size([m, G]), packed_dim=0)
        check(torch.equal(helpers.pack_to_int32(zp, bits, packed_dim=0), t["weight_zero_point"]),
              "pack_to_int32(zero points) != weight_zero_point")
    return rel


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    exe, venv = sys.argv[1], sys.argv[2]
    ensure_ct(venv)
    import torch
    torch.set_num_threads(2)
    ct = load_ct()
    failures = []
    with tempfile.TemporaryDirectory(prefix="yaqa-ckpt-") as tmp:
        r = subprocess.run([exe, tmp], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"{exe} failed ({r.returncode}): {r.stderr}")
        cases = json.loads(r.stdout)
        worst = {}
        for case in cases:
            label = (f"{case['format']} {case['scalar']} {case['m']}x{case['n']} {case['bits']}-bit "
                     f"{'sym' if case['sym'] else 'asym'} group {case['group_size']}"
                     f"{' act-order' if case['act_order'] else ''} {case['scale_type']}")
            try:
                rel = check_gptq(case, failures) if case["format"] == "gptq" else check_ct(case, ct, failures)
                key = (case["format"], case["scale_type"])
                worst[key] = max(worst.get(key, 0.0), rel)
                print(f"ok   {label}: max |dequant - recon| / |recon| = {rel:.3g}")
            except AssertionError as e:
                failures.append(f"{label}: {e}")
                print(f"FAIL {label}: {e}")
        for (fmt, st), rel in sorted(worst.items()):
            print(f"{fmt} ({st} scales): largest relative difference to yaqa's reconstruction {rel:.3g}")
    if failures:
        print(f"{len(failures)} of {len(cases)} cases failed")
        sys.exit(1)
    print(f"all {len(cases)} cases passed (compressed-tensors {CT_VERSION}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
