#!/usr/bin/env python3
"""End to end from PyTorch: tiny random-init 2-layer model -> tools/collect_hessians.py (X^T X,
Sketch A and Sketch B) -> yaqa-quantize (rtn, ldlq with NAME.H, yaqa with --sketch b and
--sketch a; 2-bit int) -> load the dequantized weights back into the model ->
KL(original || quantized) on held-out synthetic data.

Asserts KL(ldlq) < KL(rtn) and KL(yaqa) < KL(rtn) (both sketches), each by a clear margin, and
prints them all.

Usage: /usr/bin/python3 tests/python/test_torch_e2e.py [PATH/TO/yaqa-quantize]
       (or env YAQA_QUANTIZE; ctest: python/torch_e2e). Exits 77 (skipped) without the CLI.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import collect_hessians as ch  # noqa: E402

MODEL_SEED = 0      # TinyLM init (64 -> 128 -> 64)
LABEL_SEED = 0      # sampled labels and calibration data
HELDOUT_SEED = 1000  # held-out sequences: same Markov chain, other samples
# Largest allowed KL ratio to RTN: the measured ratios are far below (see the printed table), so
# a failure means a real regression (wrong factor side, wrong basis on load, ...), not noise.
MAX_RATIO = 0.85


def run(cmd, what):
    t0 = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        sys.exit(f"torch_e2e: {what} failed (exit {r.returncode}):\n  {' '.join(map(str, cmd))}\n"
                 f"{r.stdout}{r.stderr}")
    return time.time() - t0


def kl_per_token(ref: torch.nn.Module, quant: torch.nn.Module, batches) -> float:
    """Mean over held-out tokens of KL(p_ref || p_quant) (nats)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for tok in batches:
            lp = torch.log_softmax(ref(tok).double(), -1)
            lq = torch.log_softmax(quant(tok).double(), -1)
            total += float((lp.exp() * (lp - lq)).sum())
            count += tok.numel()
    return total / count


def main() -> int:
    cli = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("YAQA_QUANTIZE", "")
    if not cli or not Path(cli).is_file():
        print(f"torch_e2e: SKIP: yaqa-quantize not found (argv[1] / YAQA_QUANTIZE = '{cli}')")
        return 77
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="yaqa_e2e_") as d:
        d = Path(d)
        W, H = d / "W.safetensors", d / "H.safetensors"
        # calibration: 32 sequences of 64 tokens; packed F64 factors (the reference layout);
        # tags a and b (the defaults); Sketch A with 3 passes
        t = run([sys.executable, ROOT / "tools" / "collect_hessians.py", "--demo-model", "tiny",
                 "--model-seed", MODEL_SEED, "--kind", "xtx,sketch-a,sketch-b", "--passes", 3,
                 "--seed", LABEL_SEED, "--batches", 4, "--batch-size", 8, "--seq-len", 64,
                 "--packed", "--out", H, "--weights-out", W, "--quiet"], "collect_hessians.py")
        print(f"torch_e2e: collected X^T X, Sketch A and Sketch B in {t:.1f} s")

        original = ch.TinyLM(seed=MODEL_SEED)
        w_in, _ = ch.load_safetensors(str(W))
        heldout = ch.markov_batches(original.vocab, batches=4, batch_size=8, seq_len=64,
                                    seed=HELDOUT_SEED)
        common = ["--weights", W, "--hessians", H, "--quantizer", "int", "--bits", 2, "--quiet"]
        methods = {"rtn": ["--method", "rtn"], "ldlq": ["--method", "ldlq"],
                   "yaqa-b": ["--method", "yaqa", "--sketch", "b"],
                   "yaqa-a": ["--method", "yaqa", "--sketch", "a"]}
        kl = {}
        for method, extra in methods.items():
            Q = d / f"Q_{method}.safetensors"
            t = run([cli, *common, *extra, "--out", Q], f"yaqa-quantize {' '.join(extra)}")
            q, _ = ch.load_safetensors(str(Q))
            for name in ("fc1.weight", "fc2.weight"):
                assert name in q, f"{method}: output lacks '{name}'"
                assert q[name].dtype == torch.float32, f"{method}: '{name}' is {q[name].dtype}"
                assert q[name].shape == w_in[name].shape, \
                    f"{method}: '{name}' has shape {list(q[name].shape)}, expected " \
                    f"{list(w_in[name].shape)} ([out, in])"
                assert name + ".qcodes" in q and name + ".qparams" in q, \
                    f"{method}: '{name}.qcodes' / '.qparams' missing"
                rel = float((q[name] - w_in[name]).norm() / w_in[name].norm())
                # 2-bit: the weights must have moved, but stay the same matrix (not transposed,
                # not another basis): a basis error gives a relative error near or above 1
                assert 0.05 < rel < 0.9, f"{method}: '{name}' relative error {rel:.3f}"
            for name in ("embed.weight", "fc1.bias", "fc2.bias"):  # no Hessians: copied
                assert torch.equal(q[name], w_in[name]), f"{method}: '{name}' was not copied"
            model = ch.TinyLM(seed=MODEL_SEED)
            model.load_state_dict({k: q[k] for k in model.state_dict()})
            kl[method] = kl_per_token(original, model, heldout)
            print(f"torch_e2e: {method:6s} quantized in {t:5.2f} s   KL(original || quantized) = "
                  f"{kl[method]:.5f} nats/token   ratio to rtn = {kl[method] / kl['rtn']:.3f}")
    print(f"torch_e2e: total {time.time() - t_start:.1f} s")
    ok = True
    for method in ("ldlq", "yaqa-b", "yaqa-a"):
        if not kl[method] < MAX_RATIO * kl["rtn"]:
            print(f"torch_e2e: FAIL: KL({method}) = {kl[method]:.5f} is not below "
                  f"{MAX_RATIO} x KL(rtn) = {MAX_RATIO * kl['rtn']:.5f}")
            ok = False
    if not all(v > 0 and v == v for v in kl.values()):
        print(f"torch_e2e: FAIL: KLs must be finite and positive: {kl}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
