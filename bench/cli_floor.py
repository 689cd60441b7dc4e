#!/usr/bin/python3
"""Whole-process `yaqa-quantize` time against its FLOP floor, one layer (issue #17, item 1).

For each size and method: writes one m x n layer and its Hessian factors (AR(1) covariances with a
random diagonal scaling: SPD, cheap to build), runs the CLI with the default options plus
`--no-rht --bits 4`, and prints the wall time of the process, the report's stage times, and the
floor measured in the same run:

  yaqa: m n (m + n) flops at the fp32 GEMM rate + (2/3)(m^3 + n^3) at the fp64 GEMM rate
  ldlq, gptq: m n^2 at the fp32 rate + (2/3) n^3 at the fp64 rate

The rates are the library's chunked GEMM (BM_gemm_backend) at the layer's n (fp32) and at 2048
(fp64), from yaqa-bench-linalg. Usage:

  python3 bench/cli_floor.py --bin build/bin [--sizes 2048 4096] [--methods yaqa ldlq gptq]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a)
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in blobs:
            f.write(a.tobytes())


def spd(n, rho, seed):
    """D^1/2 (T + 0.1 11^T + c v v^T) D^1/2, T_ij = rho^|i-j| truncated below 1e-6, D in [0.5, 2].
    Built in row blocks, in float32 (n = 28672 is 3.3 GB)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n)
    d = np.sqrt(rng.uniform(0.5, 2.0, n))
    out = np.empty((n, n), dtype=np.float32)
    j = np.arange(n, dtype=np.float64)
    for r0 in range(0, n, 1024):
        i = np.arange(r0, min(n, r0 + 1024), dtype=np.float64)
        t = rho ** np.abs(i[:, None] - j[None, :])
        t[t < 1e-6] = 0  # no subnormal floats (they would time the FPU's slow path, not the library)
        # plus a constant correlation and a random rank-one part, as activations have (a common
        # direction): without them the Cholesky factors of an AR(1) matrix decay into subnormals
        t += 0.1 + 0.2 * np.outer(v[r0:r0 + len(i)], v) / n * 16
        out[r0:r0 + len(i)] = t * d[r0:r0 + len(i), None] * d[None, :]
    return out


def gemm_rates(bench, sizes):
    """GFLOP/s of the backend GEMM: fp32 at each size, fp64 at 2048."""
    out = subprocess.run([bench, "--benchmark_filter=BM_gemm_backend", "--benchmark_format=json",
                          "--benchmark_min_time=1"], check=True, capture_output=True, text=True).stdout
    rates = {}
    for b in json.loads(out)["benchmarks"]:
        name = b["name"]  # BM_gemm_backend<float>/4096/real_time
        t = "f32" if "<float>" in name else "f64"
        n = int(name.split("/")[1])
        rates[(t, n)] = b["FLOPS"] / 1e9 if "FLOPS" in b else b["GFLOPS"]
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="square layers n x n")
    ap.add_argument("--shapes", nargs="*", default=[], help="more layers as MxN (out x in), e.g. 8192x28672")
    ap.add_argument("--methods", nargs="+", default=["yaqa", "ldlq", "gptq"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--extra", default="", help="extra CLI options, e.g. '--rtn-baseline'")
    ap.add_argument("--json", help="write the rows as JSON here")
    a = ap.parse_args()
    cli = os.path.join(a.bin, "yaqa-quantize")
    bench = os.path.join(a.bin, "yaqa-bench-linalg")
    shapes = [(n, n) for n in a.sizes] + [tuple(int(x) for x in s.split("x")) for s in a.shapes]
    rates = gemm_rates(bench, a.sizes)
    r64 = rates[("f64", 2048)]
    print(f"GEMM (backend): fp64 {r64:.1f} GFLOP/s at 2048; fp32 " +
          ", ".join(f"{rates[('f32', n)]:.1f} at {n}" for n in a.sizes if ("f32", n) in rates), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m, n in shapes:
            r32 = rates.get(("f32", n)) or rates[("f32", max(k for t, k in rates if t == "f32"))]
            rng = np.random.default_rng(n)
            w = rng.standard_normal((m, n)).astype(np.float32) * 0.02
            wpath, hpath = os.path.join(tmp, "w.safetensors"), os.path.join(tmp, "h.safetensors")
            write_safetensors(wpath, {"layer.weight": w})
            del w
            hin = spd(n, 0.6, 1)
            hs = {"layer.weight.H_in": hin, "layer.weight.H_out": spd(m, 0.3, 2)}
            if "yaqa" not in a.methods or len(a.methods) > 1:
                hs["layer.weight.H"] = hin
            write_safetensors(hpath, hs)
            del hin, hs
            for meth in a.methods:
                out, rep = os.path.join(tmp, "o.safetensors"), os.path.join(tmp, "r.json")
                cmd = [cli, "--weights", wpath, "--hessians", hpath, "--out", out, "--report", rep, "--method", meth,
                       "--no-rht", "--bits", "4", "--threads", str(a.threads), "-q"] + a.extra.split()
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd)
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - t0
                if status != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed ({status})")
                rss_gb = usage.ru_maxrss / 2**20  # KiB -> GiB
                layer = json.load(open(rep))["layers"][0]
                if meth == "yaqa":
                    floor = m * n * (m + n) / (r32 * 1e9) + (2 / 3) * (m**3 + n**3) / (r64 * 1e9)
                else:
                    floor = m * n * n / (r32 * 1e9) + (2 / 3) * n**3 / (r64 * 1e9)
                row = {"method": meth, "m": m, "n": n, "wall_s": wall, "floor_s": floor, "ratio": wall / floor,
                       "peak_rss_gib": rss_gb, "stages": layer["stages"], "relative_proxy": layer["relative_proxy"]}
                rows.append(row)
                st = " ".join(f"{k} {v:.2f}" for k, v in layer["stages"].items())
                print(f"{meth:5s} {m}x{n}: process {wall:.2f} s, floor {floor:.2f} s, {wall / floor:.2f}x floor, "
                      f"peak RSS {rss_gb:.2f} GiB | {st}", flush=True)
    if a.json:
        json.dump({"gemm_gflops": {f"{t}/{k}": v for (t, k), v in rates.items()}, "rows": rows}, open(a.json, "w"),
                  indent=1)


if __name__ == "__main__":
    sys.exit(main())
