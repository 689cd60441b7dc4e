#!/usr/bin/env python3
"""Tests of tools/collect_hessians.py against naive references (plain unittest, no pytest).

Run: /usr/bin/python3 tests/python/test_collect_hessians.py   (ctest: python/collect_hessians)

The references recompute every factor from its definition with per-token / per-sequence Python
loops and hand-written backprop (no hooks, no autograd), on layer sizes that are not multiples of
16, so a wrong side, a missing transpose, a wrong sequence grouping or labels that differ between
passes all show up as mismatches.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import collect_hessians as ch  # noqa: E402

torch.set_default_dtype(torch.float64)  # the models run in f64, so references match to ~1e-12


# ---------------------------------------------------------------------------------------------
# models whose layer gradients the test computes by hand

class OneLayer(nn.Module):
    def __init__(self, n, v, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(n, v)

    def forward(self, x):
        return self.proj(x)


class TwoLayer(nn.Module):
    """x -> fc1 -> tanh (in place when inplace=True) -> fc2 -> logits."""

    def __init__(self, n, h, v, seed, inplace=False):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(n, h)
        self.fc2 = nn.Linear(h, v)
        with torch.no_grad():
            self.fc2.weight.mul_(3.0)  # peaked softmax: the Fisher is far from uniform
        self.inplace = inplace

    def forward(self, x):
        a = self.fc1(x)
        a = a.tanh_() if self.inplace else torch.tanh(a)
        return self.fc2(a)


def sampled_labels(logits, seed, b_idx):
    """The labels the collector draws for batch b_idx (its documented seeding)."""
    gen = torch.Generator().manual_seed(seed * 1000003 + b_idx)
    flat = logits.reshape(-1, logits.shape[-1])
    return torch.multinomial(torch.softmax(flat.double(), -1), 1, generator=gen).squeeze(1)


def two_layer_tokens(model, batches, seed):
    """Per batch: per-token (x1, g1, x2, g2) for fc1 and fc2 as [S, T, dim], by hand."""
    out = []
    W1, b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
    W2, b2 = model.fc2.weight.detach(), model.fc2.bias.detach()
    for i, x in enumerate(batches):
        h = x @ W1.T + b1
        a = torch.tanh(h)
        z = a @ W2.T + b2
        labels = sampled_labels(z, seed, i).reshape(z.shape[:-1])
        g2 = torch.softmax(z, -1) - F.one_hot(labels, z.shape[-1]).double()  # d(sum CE)/dz
        g1 = (g2 @ W2) * (1 - a * a)
        out.append((x, g1, a, g2))
    return out


def ref_sketch_b(pairs):
    """(1/S) sum_s G_s^T G_s and G_s G_s^T with G_s = sum_t g_t x_t^T, by loops."""
    n, m = pairs[0][0].shape[-1], pairs[0][1].shape[-1]
    hin, hout, S = torch.zeros(n, n), torch.zeros(m, m), 0
    for x, g in pairs:
        for s in range(x.shape[0]):
            G = torch.zeros(m, n)
            for t in range(x.shape[1]):
                G += torch.outer(g[s, t], x[s, t])
            hin += G.T @ G
            hout += G @ G.T
            S += 1
    return hin / S, hout / S


def ref_sketch_a(pairs, passes):
    """Power iteration over passes with per-token loops (yaqa-algorithm.md §2.2)."""
    xs = torch.cat([x.reshape(-1, x.shape[-1]) for x, _ in pairs])
    gs = torch.cat([g.reshape(-1, g.shape[-1]) for _, g in pairs])
    N = xs.shape[0]
    h_in = sum(torch.outer(x, x) for x in xs) / N
    h_out = None
    for p in range(1, passes):
        if p % 2:
            h_out = sum((x @ h_in @ x) * torch.outer(g, g) for x, g in zip(xs, gs))
            h_out = h_out / N / (h_in * h_in).sum()
        else:
            h_in = sum((g @ h_out @ g) * torch.outer(x, x) for x, g in zip(xs, gs))
            h_in = h_in / N / (h_out * h_out).sum()
    return h_in, h_out


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def random_batches(shape_list, n, seed):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs (a random mixing), so X^T X is far from diagonal
    mix = torch.randn(n, n, generator=g)
    return [torch.randn(*s, n, generator=g) @ mix for s in shape_list]


# ---------------------------------------------------------------------------------------------
# an independent minimal safetensors parser (does not use the module's reader)

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
      "I8": "i1", "U8": "u1", "BOOL": "?"}


def parse_safetensors(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert 8 + n <= len(raw), "header longer than the file"
    text = raw[8:8 + n]
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    assert text.decode("utf-8").rstrip(" ") == text.decode("utf-8").strip(), "padding not spaces"
    header = json.loads(text)
    meta = header.pop("__metadata__", None)
    data = raw[8 + n:]
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    pos = 0
    for b, e in spans:  # contiguous, non-overlapping, covering the whole data section
        assert b == pos, f"gap or overlap at {b} (expected {pos})"
        pos = e
    assert pos == len(data), f"data section has {len(data)} bytes, tensors cover {pos}"
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":  # bf16 -> f32: the 16 bits are the top half of an f32
            u16 = np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(data[b:e], dtype=NP[info["dtype"]])
        assert arr.size == math.prod(info["shape"]), name
        tensors[name] = (info["dtype"], arr.reshape(info["shape"]))
    return tensors, meta


class TestSafetensors(unittest.TestCase):
    def test_written_file_parses_independently(self):
        g = torch.Generator().manual_seed(3)
        ts = {
            "a.f64": torch.randn(5, 3, generator=g, dtype=torch.float64),
            "b.f32": torch.randn(7, generator=g, dtype=torch.float32),
            "c.f16": torch.randn(2, 3, 1, generator=g).half(),
            "d.bf16": torch.randn(9, generator=g).bfloat16(),
            "e.i64": torch.randint(-2**40, 2**40, (4,), generator=g),
            "f.i32": torch.randint(-1000, 1000, (3, 2), generator=g).int(),
            "g.i16": torch.tensor([-3, 7, 32767], dtype=torch.int16),
            "h.i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
            "i.u8": torch.tensor([[0, 255]], dtype=torch.uint8),
            "j.bool": torch.tensor([True, False, True]),
            "k.scalar": torch.tensor(2.5, dtype=torch.float32),
            "l.empty": torch.zeros(0, 4, dtype=torch.float32),
            "m.noncontig": torch.randn(4, 6, generator=g, dtype=torch.float64).T,
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            ch.save_safetensors(ts, path, {"seed": 7, "note": "x y"})
            parsed, meta = parse_safetensors(path)
            self.assertEqual(meta, {"seed": "7", "note": "x y"})
            self.assertEqual(set(parsed), set(ts))
            want = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
                    torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
            for k, t in ts.items():
                dt, arr = parsed[k]
                self.assertEqual(dt, want[t.dtype], k)
                self.assertEqual(list(arr.shape), list(t.shape), k)
                ref = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
                np.testing.assert_array_equal(arr, ref, err_msg=k)
            # and the module's own reader round-trips bit for bit
            back, meta2 = ch.load_safetensors(path)
            self.assertEqual(meta2, meta)
            for k, t in ts.items():
                self.assertEqual(back[k].dtype, t.dtype, k)
                self.assertTrue(torch.equal(back[k], t), k)

    def test_rejects_unsupported_dtype_and_bad_names(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.safetensors")
            with self.assertRaisesRegex(ch.CollectError, "complex|dtype"):
                ch.save_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, p)
            with self.assertRaisesRegex(ch.CollectError, "__metadata__"):
                ch.save_safetensors({"__metadata__": torch.zeros(2)}, p)

    def test_reader_rejects_truncated_file(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.safetensors")
            ch.save_safetensors({"a": torch.arange(10.0)}, p)
            raw = Path(p).read_bytes()
            Path(p).write_bytes(raw[:-8])
            with self.assertRaisesRegex(ch.CollectError, "outside"):
                ch.load_safetensors(p)
            Path(p).write_bytes(raw[:20])
            with self.assertRaisesRegex(ch.CollectError, "header length"):
                ch.load_safetensors(p)


class TestPacked(unittest.TestCase):
    def test_round_trip_and_tril_order(self):
        for n in (1, 2, 5, 17):
            a = torch.randn(n, n)
            h = a @ a.T
            p = ch.pack_tril(h)
            self.assertEqual(p.shape, (n * (n + 1) // 2,))
            for i in range(n):  # element (i, j), i >= j, at i(i+1)/2 + j
                for j in range(i + 1):
                    self.assertEqual(float(p[i * (i + 1) // 2 + j]), float(h[i, j]))
            self.assertTrue(torch.equal(ch.unpack_tril(p), h))
            self.assertTrue(torch.equal(ch.unpack_tril(p, n), h))
        with self.assertRaisesRegex(ch.CollectError, "n\\(n\\+1\\)/2"):
            ch.unpack_tril(torch.zeros(4))
        with self.assertRaisesRegex(ch.CollectError, "square"):
            ch.pack_tril(torch.zeros(2, 3))


class TestCollect(unittest.TestCase):
    def test_xtx_equals_hand_computed_one_layer(self):
        n, v = 13, 7
        model = OneLayer(n, v, seed=1)
        batches = random_batches([(3, 5), (2, 5), (4, 5)], n, seed=2)
        H = ch.collect(model, batches, kind="xtx", passes=1, tag=None)
        self.assertEqual(set(H), {"proj.weight.H"})
        X = torch.cat([b.reshape(-1, n) for b in batches])
        ref = X.T @ X / X.shape[0]
        self.assertEqual(H["proj.weight.H"].shape, (n, n))
        self.assertEqual(H["proj.weight.H"].dtype, torch.float64)
        self.assertLess(rel_err(H["proj.weight.H"], ref), 1e-13)
        # 2-D inputs (independent samples) give the same X^T X
        H2 = ch.collect(model, [b.reshape(-1, n) for b in batches], kind="xtx", passes=1, tag=None)
        self.assertLess(rel_err(H2["proj.weight.H"], ref), 1e-13)
        H32 = ch.collect(model, batches, kind="xtx", passes=1, tag=None, dtype=torch.float32)
        self.assertEqual(H32["proj.weight.H"].dtype, torch.float32)
        self.assertLess(rel_err(H32["proj.weight.H"].double(), ref), 1e-6)

    def test_sketch_b_one_layer_closed_form_gradient(self):
        n, v, seed = 11, 6, 5
        model = OneLayer(n, v, seed=4)
        batches = random_batches([(4, 9), (3, 9)], n, seed=6)
        H = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=seed)
        W, b = model.proj.weight.detach(), model.proj.bias.detach()
        pairs = []
        for i, x in enumerate(batches):
            z = x @ W.T + b
            lab = sampled_labels(z, seed, i).reshape(z.shape[:-1])
            pairs.append((x, torch.softmax(z, -1) - F.one_hot(lab, v).double()))
        hin, hout = ref_sketch_b(pairs)
        self.assertEqual(H["proj.weight.b.H_in"].shape, (n, n))
        self.assertEqual(H["proj.weight.b.H_out"].shape, (v, v))
        self.assertLess(rel_err(H["proj.weight.b.H_in"], hin), 1e-12)
        self.assertLess(rel_err(H["proj.weight.b.H_out"], hout), 1e-12)
        # processing one sequence at a time (the memory bound for big layers) changes nothing
        saved, ch.SKETCH_B_CHUNK = ch.SKETCH_B_CHUNK, 1
        try:
            H1 = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=seed)
        finally:
            ch.SKETCH_B_CHUNK = saved
        for k in H:
            self.assertLess(rel_err(H1[k], H[k]), 1e-13, k)
        # sequences matter: regrouping the same tokens as 1-token sequences changes the factors
        flat = [x.reshape(-1, n) for x in batches]
        Hf = ch.collect(model, flat, kind="sketch-b", passes=1, tag="b", seed=seed)
        self.assertGreater(rel_err(Hf["proj.weight.b.H_in"], hin), 1e-3)
        # ... and seq_len restores the grouping
        Hs = ch.collect(model, flat, kind="sketch-b", passes=1, tag="b", seed=seed, seq_len=9)
        self.assertLess(rel_err(Hs["proj.weight.b.H_in"], hin), 1e-12)

    def test_two_layer_sketches_match_reference(self):
        n, h, v, seed, passes = 10, 12, 9, 3, 4
        model = TwoLayer(n, h, v, seed=8)
        batches = random_batches([(3, 6), (2, 6)], n, seed=9)
        H = ch.collect(model, batches, kind=["xtx", "sketch-a", "sketch-b"], passes=passes,
                       tag=None, seed=seed)
        toks = two_layer_tokens(model, batches, seed)
        for name, xi, gi in (("fc1.weight", 0, 1), ("fc2.weight", 2, 3)):
            pairs = [(t[xi], t[gi]) for t in toks]
            X = torch.cat([x.reshape(-1, x.shape[-1]) for x, _ in pairs])
            self.assertLess(rel_err(H[name + ".H"], X.T @ X / X.shape[0]), 1e-12, name)
            bi, bo = ref_sketch_b(pairs)
            self.assertLess(rel_err(H[name + ".b.H_in"], bi), 1e-11, name)
            self.assertLess(rel_err(H[name + ".b.H_out"], bo), 1e-11, name)
            ai, ao = ref_sketch_a(pairs, passes)
            self.assertLess(rel_err(H[name + ".a.H_in"], ai), 1e-11, name)
            self.assertLess(rel_err(H[name + ".a.H_out"], ao), 1e-11, name)
        # an in-place op on a Linear's output (tanh_) must not change what is collected
        model_ip = TwoLayer(n, h, v, seed=8, inplace=True)
        H_ip = ch.collect(model_ip, batches, kind=["xtx", "sketch-a", "sketch-b"],
                          passes=passes, tag=None, seed=seed)
        for k in H:
            self.assertLess(rel_err(H_ip[k], H[k]), 1e-12, k)

    def test_sketch_factors_symmetric_psd(self):
        model = ch.TinyLM(seed=1)
        batches = ch.markov_batches(model.vocab, batches=3, batch_size=4, seq_len=32, seed=2)
        H = ch.collect(model, batches, kind=["sketch-a", "sketch-b"], passes=3, seed=0)
        self.assertEqual(len(H), 8)
        shapes = {"fc1.weight": (128, 64), "fc2.weight": (64, 128)}
        for k, t in H.items():
            w = k.split(".")[0] + ".weight"
            m, n = shapes[w]
            self.assertEqual(t.shape, (n, n) if k.endswith("H_in") else (m, m), k)
            self.assertTrue(torch.equal(t, t.T), k)
            ev = torch.linalg.eigvalsh(t)
            self.assertGreater(float(ev[-1]), 0, k)
            self.assertGreater(float(ev[0]), -1e-10 * float(ev[-1]), k)
            self.assertTrue(bool(torch.isfinite(t).all()), k)

    def test_model_state_is_restored_and_labels_deterministic(self):
        model = TwoLayer(6, 5, 4, seed=2)
        model.train()
        model.fc1.bias.requires_grad_(False)
        batches = random_batches([(2, 3)], 6, seed=1)
        H1 = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=11)
        self.assertTrue(model.training)
        self.assertFalse(model.fc1.bias.requires_grad)
        self.assertTrue(model.fc1.weight.requires_grad)
        self.assertTrue(all(p.grad is None for p in model.parameters()))
        self.assertEqual(len(model.fc1._forward_hooks), 0)
        H2 = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=11)
        H3 = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=12)
        for k in H1:
            self.assertTrue(torch.equal(H1[k], H2[k]), k)
        self.assertGreater(rel_err(H3["fc2.weight.b.H_out"], H1["fc2.weight.b.H_out"]), 1e-3)

    def test_frozen_model_under_no_grad(self):
        model = TwoLayer(6, 5, 4, seed=2)
        for p in model.parameters():
            p.requires_grad_(False)
        batches = random_batches([(2, 3)], 6, seed=1)
        with torch.no_grad():
            H = ch.collect(model, batches, kind="sketch-b", passes=1, tag="b", seed=1)
        pairs = [(t[0], t[1]) for t in two_layer_tokens(model, batches, 1)]
        self.assertLess(rel_err(H["fc1.weight.b.H_in"], ref_sketch_b(pairs)[0]), 1e-12)
        self.assertFalse(any(p.requires_grad for p in model.parameters()))

    def test_layers_selection_and_tags(self):
        model = TwoLayer(6, 5, 4, seed=2)
        batches = random_batches([(2, 3)], 6, seed=1)
        self.assertEqual(set(ch.collect(model, batches, kind="xtx", layers=["fc2"])),
                         {"fc2.weight.H"})
        self.assertEqual(set(ch.collect(model, batches, kind="xtx", layers="^fc1")),
                         {"fc1.weight.H"})
        self.assertEqual(set(ch.collect(model, batches, kind="sketch-b", layers=["fc1.weight"],
                                        tag="")),
                         {"fc1.weight.H_in", "fc1.weight.H_out"})
        self.assertEqual(set(ch.collect(model, batches, kind="sketch-a", passes=2, layers=["fc1"],
                                        tag="x7")),
                         {"fc1.weight.x7.H_in", "fc1.weight.x7.H_out"})

    def test_errors_name_the_argument(self):
        model = TwoLayer(6, 5, 4, seed=2)
        batches = random_batches([(2, 3)], 6, seed=1)
        cases = [
            (dict(kind="sketch-a", passes=1), "'passes' is 1"),
            (dict(kind="hessian"), "'kind' is 'hessian'"),
            (dict(kind=["sketch-a", "sketch-b"], tag="t"), "'tag' must be None"),
            (dict(kind="xtx", layers=["nope"]), "'layers' names \\['nope'\\]"),
            (dict(kind="xtx", dtype=torch.float16), "'dtype'"),
        ]
        for kw, msg in cases:
            with self.assertRaisesRegex(ch.CollectError, msg):
                ch.collect(model, batches, **kw)
        with self.assertRaisesRegex(ch.CollectError, "one-shot iterator"):
            ch.collect(model, iter(batches), kind="sketch-a", passes=2)
        with self.assertRaisesRegex(ch.CollectError, "no tokens"):
            ch.collect(model, [], kind="xtx")


class TestScript(unittest.TestCase):
    def test_cli_demo_writes_aligned_files(self):
        with tempfile.TemporaryDirectory() as d:
            hp, wp = os.path.join(d, "H.safetensors"), os.path.join(d, "W.safetensors")
            r = subprocess.run([sys.executable, str(ROOT / "tools" / "collect_hessians.py"),
                                "--demo-model", "tiny", "--out", hp, "--kind", "sketch-b",
                                "--sketch", "b", "--seed", "0", "--weights-out", wp, "--batches",
                                "2", "--packed", "--dtype", "F32"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            H, hmeta = parse_safetensors(hp)
            W, _ = parse_safetensors(wp)
            self.assertEqual(hmeta["kind"], "sketch-b")
            self.assertEqual(hmeta["packed"], "1")
            self.assertEqual(set(H), {"fc1.weight.b.H_in", "fc1.weight.b.H_out",
                                      "fc2.weight.b.H_in", "fc2.weight.b.H_out"})
            self.assertEqual(set(W), {"embed.weight", "fc1.weight", "fc1.bias", "fc2.weight",
                                      "fc2.bias"})
            for k, (dt, arr) in H.items():
                self.assertEqual(dt, "F32", k)
                wname = k.split(".b.")[0]
                m, n = W[wname][1].shape
                side = n if k.endswith("H_in") else m
                self.assertEqual(arr.shape, (side * (side + 1) // 2,), k)
            for k, (dt, arr) in W.items():
                self.assertEqual(dt, "F32", k)
            # the weights file holds the model the script used (TinyLM, --model-seed 0)
            ref = ch.TinyLM(seed=0).state_dict()
            for k, (_, arr) in W.items():
                np.testing.assert_array_equal(arr, ref[k].float().numpy(), err_msg=k)
            # and the Hessians equal collect() on the same model and batches
            model = ch.TinyLM(seed=0)
            batches = ch.markov_batches(model.vocab, 2, 8, 64, seed=0)
            ref_h = ch.collect(model, batches, kind="sketch-b", tag="b", seed=0)
            for k, (_, arr) in H.items():
                want = ch.pack_tril(ref_h[k]).float().numpy()
                np.testing.assert_allclose(arr, want, rtol=1e-6, atol=1e-7 * np.abs(want).max(),
                                           err_msg=k)

    def test_cli_model_module(self):
        factory = '''
import torch, torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 12)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(12, 24), nn.ReLU(),
                                                   nn.Linear(24, 12))])
        self.head = nn.Linear(12, 20)
    def forward(self, tok):
        h = self.emb(tok)
        return self.head(h + self.blocks[0](h))
def with_data():
    g = torch.Generator().manual_seed(1)
    return Net(), [torch.randint(20, (3, 7), generator=g) for _ in range(2)]
def model_only():
    return Net()
'''
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "user_model.py")
            Path(src).write_text(factory)
            for fn, extra in (("with_data", []), ("model_only", ["--vocab", "20"])):
                hp = os.path.join(d, f"H_{fn}.safetensors")
                r = subprocess.run([sys.executable, str(ROOT / "tools" / "collect_hessians.py"),
                                    "--model-module", f"{src}:{fn}", "--out", hp, "--kind",
                                    "xtx", "--quiet", *extra],
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                H, _ = parse_safetensors(hp)
                self.assertEqual({k: v[1].shape for k, v in H.items()},
                                 {"blocks.0.0.weight.H": (12, 12), "blocks.0.2.weight.H": (24, 24),
                                  "head.weight.H": (12, 12)}, fn)
            r = subprocess.run([sys.executable, str(ROOT / "tools" / "collect_hessians.py"),
                                "--model-module", f"{src}:model_only", "--out", hp],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1)
            self.assertIn("--vocab is required", r.stderr)

    def test_cli_usage_error(self):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "collect_hessians.py"),
                            "--demo-model", "tiny", "--out", os.devnull, "--kind", "sketch-a",
                            "--passes", "1"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 1)
        self.assertIn("'passes' is 1", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
