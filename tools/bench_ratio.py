#!/usr/bin/env python3
"""Print each benchmark's rate and its ratio to the GEMM reference measured in the same run.

Usage: yaqa-bench --benchmark_out=r.json --benchmark_out_format=json ...; tools/bench_ratio.py r.json
The reference is BM_gemm_eigen<float>/4096 (else the largest BM_gemm_eigen<float> present); for
yaqa-bench-cuda output it is the cuBLAS BM_cuda_sgemm/4096 (else the largest BM_cuda_sgemm).
"""
import json
import re
import sys


def main(path):
    data = json.load(open(path))
    rows = [b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    gemm = [b for b in rows if b["name"].startswith("BM_gemm_eigen<float>/") and "FLOPS" in b]
    if not gemm:
        gemm = [b for b in rows if b["name"].startswith("BM_cuda_sgemm/") and "FLOPS" in b]
    ref = None
    if gemm:
        ref = max(gemm, key=lambda b: int(re.findall(r"/(\d+)", b["name"])[0]))
    ctx = data.get("context", {})
    dev = f", {ctx['cuda_device']} (driver {ctx.get('cuda_driver', '?')})" if "cuda_device" in ctx else ""
    print(f"# {ctx.get('cpu_model', '?')}, {ctx.get('threads', '?')} threads{dev}, yaqa {ctx.get('yaqa_version', '?')} ({ctx.get('git_sha', '?')})")
    if ref:
        print(f"# reference: {ref['name']} = {ref['FLOPS'] / 1e9:.1f} GFLOP/s")
    print("| benchmark | time (ms) | GFLOP/s | ratio to GEMM | GB/s |")
    print("|---|---|---|---|---|")
    for b in rows:
        scale = {"ns": 1e6, "us": 1e3, "ms": 1.0, "s": 1e-3}[b.get("time_unit", "ns")]
        t = b["real_time"] / scale
        fl, by = b.get("FLOPS"), b.get("BYTES")
        gf = f"{fl / 1e9:.1f}" if fl else ""
        ratio = f"{fl / ref['FLOPS']:.2f}" if (fl and ref) else ""
        gb = f"{by / 1e9:.2f}" if by else ""
        print(f"| {b['name']} | {t:.2f} | {gf} | {ratio} | {gb} |")


if __name__ == "__main__":
    main(sys.argv[1])
