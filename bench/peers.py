#!/usr/bin/python3
"""Side by side with the peers' algorithms (issue #17, item 7), one layer, one run.

The peers are PyTorch scripts; their algorithms are written here from their published
descriptions (shared docs: peers.md §2.1 for GPTQ, yaqa-algorithm.md §3.3 for YAQA's reference
ordering), in torch float32 on the CPU with the same threads, not copied from their code:

  gptq-ref   IST-DASLab/gptq's fasterquant: damp 1 % of mean diag, Cholesky -> inverse -> upper
             Cholesky of H^-1, lazy batches of 128 columns, per-column err = (w - q) / d.
  yaqa-ref   Cornell-RelaxML/yaqa's tile ordering: anti-diagonal wavefronts from the bottom-right
             tile, each tile's target L_out[a:, a]^T (W - What)[a:, k:] L_in[k:, k] with What
             zero-initialised (the reference's O(m^2 n^2 / td) form), tiles 16 x 16.

Ours: `yaqa-quantize` (the whole process, files included, and its `round` stage) on the same layer
with the same quantizer (4-bit asymmetric per-row min/max grid, no RHT). Every result's relative
proxy tr(dW H_in dW^T H_out) / tr(W H_in W^T H_out) is printed next to its time, so the ratios
compare equal work. Usage:

  python3 bench/peers.py --bin build/bin [--n 2048] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_floor import spd, write_safetensors  # noqa: E402

MAXQ = 15  # 4 bits


def fit_rows(w):
    """GPTQ's per-channel asymmetric min/max parameters (scale, zero) per row."""
    xmin = torch.clamp(w.min(dim=1).values, max=0)
    xmax = torch.clamp(w.max(dim=1).values, min=0)
    tie = (xmin == 0) & (xmax == 0)
    xmin[tie], xmax[tie] = -1, 1
    scale = (xmax - xmin) / MAXQ
    zero = torch.round(-xmin / scale)
    return scale, zero


def quant(x, scale, zero):
    q = torch.clamp(torch.round(x / scale) + zero, 0, MAXQ)
    return scale * (q - zero)


def gptq_ref(w, h, blocksize=128, percdamp=0.01):
    w = w.clone()
    m, n = w.shape
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    scale, zero = fit_rows(w)
    s, z = scale[:, None], zero[:, None]
    h[range(n), range(n)] += percdamp * torch.mean(torch.diag(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i:i + 1]
            d = hinv1[i, i]
            qc = quant(col, s, z)
            q1[:, i:i + 1] = qc
            e = (col - qc) / d
            w1[:, i:] -= e @ hinv1[i:i + 1, i:]
            err1[:, i:i + 1] = e
        q[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q


def block_ldl_l(h, b, damp=0.01):
    """Unit block-lower L of H + damp mean(diag) I = L D L^T (diagonal blocks exactly I), fp64."""
    n = h.shape[0]
    h = h.double().clone()
    h[range(n), range(n)] += damp * torch.mean(torch.diag(h))
    c = torch.linalg.cholesky(h)
    l = c.clone()
    for k in range(0, n, b):
        ckk = c[k:k + b, k:k + b]
        l[:, k:k + b] = torch.linalg.solve_triangular(ckk, c[:, k:k + b], upper=False, left=False)
        l[k:k + b, k:k + b] = torch.eye(b, dtype=l.dtype)
        l[:k, k:k + b] = 0
    return l.float()


def yaqa_ref(w, l_in, l_out, td=16):
    m, n = w.shape
    mt, nt = m // td, n // td
    scale, zero = fit_rows(w)
    s, z = scale[:, None], zero[:, None]
    what = torch.zeros_like(w)
    starts = [(mt - 1 - i, nt - 1) for i in range(mt)] + [(0, nt - 1 - i) for i in range(nt)]
    for a, k in starts:  # the reference's enumeration (its diagonal through (0, N-1) twice)
        while a < mt and k >= 0:
            r0, c0 = a * td, k * td
            e = w[r0:, c0:] - what[r0:, c0:]
            e[:td, :td] = w[r0:r0 + td, c0:c0 + td]  # What[a, k] counted as zero: the reference's form
            t = l_out[r0:, r0:r0 + td].T @ e @ l_in[c0:, c0:c0 + td]
            what[r0:r0 + td, c0:c0 + td] = quant(t, s[r0:r0 + td], z[r0:r0 + td])
            a, k = a + 1, k - 1
    return what


def proxy(w, what, hin, hout, d_in, d_out):
    dw = (w - what).double()
    hi = hin.double() + d_in * torch.eye(hin.shape[0], dtype=torch.float64)
    ho = hout.double() + d_out * torch.eye(hout.shape[0], dtype=torch.float64)
    wd = w.double()
    return float(torch.trace(dw @ hi @ dw.T @ ho) / torch.trace(wd @ hi @ wd.T @ ho))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the rows as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n = m = a.n
    rng = np.random.default_rng(n)
    w = (rng.standard_normal((m, n)) * 0.02).astype(np.float32)
    hin, hout = spd(n, 0.6, 1), spd(m, 0.3, 2)
    # the normalized factors (mean diagonal 1), as the library rounds with
    hin_n, hout_n = hin / np.mean(np.diag(hin)), hout / np.mean(np.diag(hout))
    W, Hin, Hout = torch.from_numpy(w), torch.from_numpy(hin_n), torch.from_numpy(hout_n)
    rows = []
    print(f"{m}x{n}, 4-bit asym per-row grid, no RHT, {a.threads} threads, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)", flush=True)

    def add(name, seconds, p, note=""):
        rows.append({"name": name, "seconds": seconds, "relative_proxy": p, "note": note})
        print(f"  {name:24s} {seconds:8.2f} s   relative proxy {p:.5f} {note}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        wpath, hpath = os.path.join(tmp, "w.safetensors"), os.path.join(tmp, "h.safetensors")
        write_safetensors(wpath, {"layer.weight": w})
        write_safetensors(hpath, {"layer.weight.H": hin, "layer.weight.H_in": hin, "layer.weight.H_out": hout})
        ours = {}
        for meth in ["gptq", "yaqa"]:
            out, rep = os.path.join(tmp, f"{meth}.safetensors"), os.path.join(tmp, "r.json")
            cmd = [os.path.join(a.bin, "yaqa-quantize"), "--weights", wpath, "--hessians", hpath, "--out", out,
                   "--report", rep, "--method", meth, "--no-rht", "--bits", "4", "--asym", "--threads",
                   str(a.threads), "-q"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t0
            layer = json.load(open(rep))["layers"][0]
            ours[meth] = (wall, layer)

    t0 = time.perf_counter()
    q = gptq_ref(W, Hin)
    t_gptq = time.perf_counter() - t0
    g_wall, g_layer = ours["gptq"]
    add("gptq-ref (torch)", t_gptq, proxy(W, q, Hin, torch.eye(m), 0.01, 0), "(one-sided proxy)")
    add("yaqa-quantize gptq", g_wall, g_layer["relative_proxy_one_sided"],
        f"(whole process; round stage {g_layer['stages']['round']:.2f} s)")

    t0 = time.perf_counter()
    l_in, l_out = block_ldl_l(Hin, 16), block_ldl_l(Hout, 16)
    what = yaqa_ref(W, l_in, l_out)
    t_yaqa = time.perf_counter() - t0
    y_wall, y_layer = ours["yaqa"]
    add("yaqa-ref (torch)", t_yaqa, proxy(W, what, Hin, Hout, 0.01, 0.01), "(factor + reference ordering)")
    add("yaqa-quantize yaqa", y_wall, y_layer["relative_proxy"],
        f"(whole process; factor + round stages {y_layer['stages']['factor'] + y_layer['stages']['round']:.2f} s)")
    print(f"ratios (peer / ours, whole process): gptq {t_gptq / g_wall:.1f}x, yaqa {t_yaqa / y_wall:.1f}x", flush=True)
    if a.json:
        json.dump({"m": m, "n": n, "threads": a.threads, "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
