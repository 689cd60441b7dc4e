"""quantize_layer and the quantizers: consistency of the returned codes / params / weights, the
report, float32 vs float64 and thread-count independence, and bitwise agreement with the CLI."""
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import pytest

import yaqa
from conftest import spd

M, N = 48, 96  # not multiples of the GPTQ block (128); multiples of the 16x16 tile and of FP4's 32


def layer(rng, m=M, n=N):
    w = rng.standard_normal((m, n)).astype(np.float32)
    return w, spd(rng, n, np.float32), spd(rng, m, np.float32)


def test_rtn_int_grid_codes_params_weights_agree(rng):
    w, h_in, _ = layer(rng)
    r = yaqa.quantize_layer(w, h_in, method="rtn", quantizer=yaqa.int_grid(bits=3, group_size=16),
                            incoherence=False)
    codes, scale, zero = r["codes"], r["params"]["scale"], r["params"]["zero"]
    assert codes.shape == (M, N) and codes.dtype == np.uint8 and codes.max() <= 7
    assert scale.shape == (N // 16, M) and zero.shape == scale.shape
    g = np.arange(N) // 16
    recon = scale[g, :].T * (codes.astype(np.float32) - zero[g, :].T)
    assert np.allclose(r["weights"], recon, rtol=1e-6, atol=1e-6)
    assert r["weights"].shape == (M, N) and r["weights"].dtype == np.float32
    assert not r["rotated"] and r["group_index"] is None
    # RTN: each weight is on its grid's nearest point
    assert np.abs(r["weights"] - w).max() <= 0.5 * scale.max() * 1.0001


@pytest.mark.parametrize("method", ["yaqa", "ldlq", "gptq"])
def test_feedback_methods_beat_rtn_on_the_proxy(rng, method):
    w, h_in, h_out = layer(rng)
    r = yaqa.quantize_layer(w, h_in, h_out if method == "yaqa" else None, method,
                            yaqa.int_grid(bits=2), seed=3)
    rep = r["report"]
    assert rep["method"] == method and rep["rows"] == M and rep["cols"] == N and rep["feedback"]
    assert 0 < rep["relative_proxy"] < rep["baseline_relative_proxy"]
    assert r["rotated"] and r["signs_in"].shape == (N,) and r["signs_out"].shape == (M,)
    assert set(rep["times"]) and rep["seconds"] > 0
    assert np.isfinite(r["weights"]).all()


@pytest.mark.parametrize("make,codes_shape,dtype", [
    (lambda: yaqa.lloyd_max(bits=3), (M, N), np.uint8),
    (lambda: yaqa.fp4(), (M, N), np.uint8),
    (lambda: yaqa.e8p(bits=2), (M, N // 8), np.uint16),
    (lambda: yaqa.e8p(bits=4), (M, N // 8), np.uint32),
    (lambda: yaqa.trellis(l=8, k=2), (M // 16, N // 16, 2 * 32), np.uint8),
])
def test_quantizers(rng, make, codes_shape, dtype):
    w, h_in, h_out = layer(rng)
    q = make()
    assert isinstance(q, yaqa.Quantizer) and repr(q).startswith("yaqa.")
    r = yaqa.quantize_layer(w, h_in, h_out, "yaqa", q)
    assert r["codes"].shape == codes_shape and r["codes"].dtype == dtype
    assert 0 < r["report"]["relative_proxy"] < r["report"]["baseline_relative_proxy"]
    assert "scale" in r["params"]


def test_names_and_bits_options(rng):
    w, h_in, _ = layer(rng)
    a = yaqa.quantize_layer(w, h_in, method="ldlq", quantizer="int", bits=3)
    b = yaqa.quantize_layer(w, h_in, method="ldlq", quantizer=yaqa.int_grid(bits=3))
    assert np.array_equal(a["weights"], b["weights"])
    assert a["codes"].max() <= 7


def test_float64_and_layouts_give_float32_bits(rng):
    w, h_in, h_out = layer(rng)
    a = yaqa.quantize_layer(w, h_in, h_out, seed=1)
    b = yaqa.quantize_layer(np.asfortranarray(w).astype(np.float64), h_in.astype(np.float64),
                            np.asfortranarray(h_out), seed=1)
    assert np.array_equal(a["weights"], b["weights"]) and np.array_equal(a["codes"], b["codes"])


def test_threads_do_not_change_the_result(rng):
    w, h_in, h_out = layer(rng)
    a = yaqa.quantize_layer(w, h_in, h_out, quantizer=yaqa.trellis(l=8, k=2), threads=1)
    b = yaqa.quantize_layer(w, h_in, h_out, quantizer=yaqa.trellis(l=8, k=2), threads=2)
    assert np.array_equal(a["weights"], b["weights"]) and np.array_equal(a["codes"], b["codes"])


def test_torch_inputs(rng):
    torch = pytest.importorskip("torch")
    w, h_in, h_out = layer(rng)
    a = yaqa.quantize_layer(w, h_in, h_out)
    b = yaqa.quantize_layer(torch.from_numpy(w), torch.from_numpy(h_in), torch.from_numpy(h_out).double())
    assert np.array_equal(a["weights"], b["weights"])


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    raw = open(path, "rb").read()
    (hl,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hl])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        if v["dtype"] == "F32":
            out[k] = np.frombuffer(raw[8 + hl + b:8 + hl + e], dtype="<f4").reshape(v["shape"])
    return out


@pytest.mark.skipif(not os.environ.get("YAQA_QUANTIZE"), reason="YAQA_QUANTIZE (the CLI) not given")
@pytest.mark.parametrize("method,quant,args", [
    ("yaqa", yaqa.int_grid(bits=2), ["--quantizer", "int", "--bits", "2", "--asym"]),
    ("ldlq", yaqa.e8p(bits=2), ["--quantizer", "e8p", "--bits", "2"]),
    ("gptq", yaqa.int_grid(bits=3), ["--quantizer", "int", "--bits", "3", "--asym"]),
])
def test_same_bits_as_the_cli(rng, method, quant, args):
    w, h_in, h_out = layer(rng)
    with tempfile.TemporaryDirectory() as d:
        write_safetensors(f"{d}/W.safetensors", {"fc.weight": w})
        H = {"fc.weight.H": h_in} if method != "yaqa" else {"fc.weight.H_in": h_in, "fc.weight.H_out": h_out}
        write_safetensors(f"{d}/H.safetensors", H)
        subprocess.run([os.environ["YAQA_QUANTIZE"], "--weights", f"{d}/W.safetensors", "--hessians",
                        f"{d}/H.safetensors", "--out", f"{d}/Q.safetensors", "--method", method,
                        "--seed", "5", "--threads", "2", *args], check=True, capture_output=True)
        cli = read_safetensors(f"{d}/Q.safetensors")["fc.weight"]
    r = yaqa.quantize_layer(w, h_in, h_out if method == "yaqa" else None, method, quant, seed=5)
    assert np.array_equal(r["weights"], cli)


def test_gguf_q8_0_blocks_decode_to_the_weights(rng):
    w, h_in, h_out = layer(rng)  # n = 96: three Q8_0 blocks of 32 per row
    r = yaqa.quantize_layer(w, h_in, h_out, "yaqa", yaqa.gguf("q8_0"), incoherence=False)
    blocks = r["blocks"]
    assert blocks.shape == (M, 3 * 34) and blocks.dtype == np.uint8 and r["params"] == {}
    b = blocks.reshape(M, 3, 34)
    d = b[:, :, :2].copy().view("<f2").astype(np.float32)          # [M, 3, 1] f16 scales
    qs = b[:, :, 2:].copy().view(np.int8).astype(np.float32)       # [M, 3, 32]
    assert np.array_equal((d * qs).reshape(M, N), r["weights"])
    assert 0 < r["report"]["relative_proxy"] < r["report"]["baseline_relative_proxy"]


def test_gguf_k_quant(rng):
    w, h_in, h_out = layer(rng, 32, 256)
    for imp in (True, False):
        r = yaqa.quantize_layer(w, h_in, h_out, "yaqa", yaqa.gguf("Q4_K", importance=imp), incoherence=False)
        assert r["blocks"].shape == (32, 144) and r["codes"].shape == (32, 256)
        assert 0 < r["report"]["relative_proxy"] < r["report"]["baseline_relative_proxy"]
    with pytest.raises(yaqa.InvalidArgument, match="expected one of Q8_0"):
        yaqa.gguf("q9_k")
    with pytest.raises(yaqa.InvalidArgument):
        yaqa.quantize_layer(w[:, :96], h_in[:96, :96], None, "ldlq", yaqa.gguf("q4_k"))  # 96 not a multiple of 256
