#!/usr/bin/env python3
"""The yaqa Python package end to end on a small torch model: Hessians with the package's
accumulators (the collector, tools/collect_hessians.py, does the same for any model), then every
nn.Linear quantized in place with yaqa.quantize_model, and the output error before / after.

    PYTHONPATH=build/python python3 examples/python/quantize_model.py   # a checkout's build
    python3 examples/python/quantize_model.py                           # after pip install ./python
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import collect_hessians as ch  # noqa: E402

import yaqa  # noqa: E402


def main() -> int:
    model = ch.TinyLM(seed=0)                       # 2 linears: 64 -> 128 -> 64 (random init)
    calib = ch.markov_batches(model.vocab, batches=8, batch_size=8, seq_len=64, seed=0)
    held_out = ch.markov_batches(model.vocab, batches=2, batch_size=8, seq_len=64, seed=1)
    with torch.no_grad():
        ref = [torch.log_softmax(model(b), -1) for b in held_out]

    # YAQA Sketch B through the package's SketchB (float64 sums, C++ accumulators)
    H = ch.collect(model, calib, kind="sketch-b", seed=0)
    res = yaqa.quantize_model(model, H, method="yaqa", quantizer=yaqa.int_grid(bits=3), seed=0,
                              progress=print)

    with torch.no_grad():
        kl = sum(torch.nn.functional.kl_div(torch.log_softmax(model(b), -1), r, log_target=True,
                                            reduction="sum") for b, r in zip(held_out, ref))
    tokens = sum(b.numel() for b in held_out)
    for name, r in res.items():
        print(f"{name}: codes {tuple(r['codes'].shape)} {r['codes'].dtype}, "
              f"proxy {r['report']['relative_proxy']:.4f} (RTN {r['report']['baseline_relative_proxy']:.4f})")
    print(f"KL(original || INT3 YAQA-B) per token on held-out data: {float(kl) / tokens:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
