#!/usr/bin/env python3
"""tools/collect_hessians.py --gguf-names: Hessians of HF-named weights come out under the GGUF
tensor names of llama.cpp's converter (gguf-py's tensor name map, PyPI gguf pinned as in
test_gguf_interop.py), and what cannot be named is refused.

Usage: test_collect_gguf_names.py VENV_DIR   (exit 77 = skipped when gguf or torch is missing)
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from test_gguf_interop import ensure_gguf, finish, skip  # noqa: E402


def main():
    ensure_gguf(sys.argv[1], __file__)
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        skip("torch is not importable (python3-torch)")
    import collect_hessians as ch

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(16, 16, bias=False)

        def forward(self, x):
            return self.q_proj(x)

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_proj = nn.Linear(16, 32, bias=False)
            self.down_proj = nn.Linear(32, 16, bias=False)

        def forward(self, x):
            return self.down_proj(torch.relu(self.up_proj(x)))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attn()
            self.mlp = Mlp()

        def forward(self, x):
            return x + self.mlp(self.self_attn(x))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(24, 16)
            self.layers = nn.ModuleList([Layer(), Layer()])

        def forward(self, t):
            x = self.embed_tokens(t)
            for layer in self.layers:
                x = layer(x)
            return x

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = Inner()
            self.lm_head = nn.Linear(16, 24, bias=False)

        def forward(self, t):
            return self.lm_head(self.model(t))

    model = Llama()
    batches = ch.markov_batches(24, 2, 4, 8, seed=1)
    H = ch.collect(model, batches, kind="xtx")
    G = ch.gguf_tensor_names(H, "llama")
    want = {
        "model.layers.0.self_attn.q_proj.weight.H": "blk.0.attn_q.weight.H",
        "model.layers.1.mlp.up_proj.weight.H": "blk.1.ffn_up.weight.H",
        "model.layers.1.mlp.down_proj.weight.H": "blk.1.ffn_down.weight.H",
        "lm_head.weight.H": "output.weight.H",
    }
    failures = []
    if len(G) != len(H):
        failures.append(f"{len(H)} Hessians in, {len(G)} out: {sorted(G)}")
    for hf, gg in want.items():
        if gg not in G:
            failures.append(f"{hf} -> {gg} missing (got {sorted(G)})")
        elif not torch.equal(G[gg], H[hf]):
            failures.append(f"{gg}: not the same matrix as {hf}")

    def refused(f, needle):
        try:
            f()
        except ch.CollectError as e:
            if needle not in str(e):
                failures.append(f"error without '{needle}': {e}")
            return
        failures.append(f"no CollectError (expected one about '{needle}')")

    refused(lambda: ch.gguf_tensor_names(H, "no-such-arch"), "unknown architecture")
    refused(lambda: ch.gguf_tensor_names({"fc1.weight.H": H["lm_head.weight.H"]}, "llama"), "fc1.weight")
    Hb = ch.collect(model, batches, kind="sketch-b", tag="b")
    refused(lambda: ch.gguf_tensor_names(Hb, "llama"), "--kind xtx")
    finish(failures, f"{len(want)} names checked")


if __name__ == "__main__":
    main()
