#!/usr/bin/env python3
"""Collect the Hessians of every nn.Linear of a PyTorch model, for yaqa-quantize.

Module and script. As a module::

    from collect_hessians import collect, save_safetensors
    H = collect(model, batches, kind="sketch-b", passes=1, tag="b")
    save_safetensors(H, "H.safetensors", {"model": "mine"})

As a script (no download: "tiny" is a built-in random-init model over a synthetic token stream)::

    /usr/bin/python3 tools/collect_hessians.py --demo-model tiny --out H.safetensors \
        --kind sketch-b --sketch b --seed 0 --weights-out W.safetensors

What is collected (yaqa-algorithm.md sections 1-2, docs/hessians.md): the hooks hand each layer's
x and g to the C++ accumulators yaqa::second_moment / sketch_a / sketch_b (include/yaqa/hessian/)
through the Python package (python/, ``pip install ./python`` or a build's ``build/python``), so
the algorithms exist once; the sums are kept in float64 on the CPU. For a linear layer
y = x W^T with W of shape [out, in] = [m, n], x_t is the layer input of token t (a row of n) and
g_t = dloss/dy_t the gradient of the loss with respect to the layer *output* (a row of m):

* ``xtx``      NAME.H            [n, n]  (1/N) sum_t x_t x_t^T over the N tokens
* ``sketch-a`` NAME.TAG.H_in/H_out       power iteration over P >= 2 passes of the same batches
  (token-independence assumption): pass 0 H_in = E[x x^T]; odd passes
  H_out = E[(x^T H_in x) g g^T] / ||H_in||_F^2; even passes H_in = E[(g^T H_out g) x x^T] /
  ||H_out||_F^2 (TAG defaults to "a")
* ``sketch-b`` NAME.TAG.H_in/H_out       one pass, one sample per sequence s:
  G_s = sum_t g_t x_t^T (m x n), H_in = (1/S) sum_s G_s^T G_s, H_out = (1/S) sum_s G_s G_s^T
  (TAG defaults to "b"; an empty TAG gives NAME.H_in / NAME.H_out)

NAME is the module's qualified name + ".weight", i.e. the state_dict key of the weight, so the
Hessians line up with the weights file.

Scale: the loss is the SUM over all positions of the cross-entropy to labels sampled from the
model's own softmax (the true Fisher, not the empirical one), so g_t = softmax_t - onehot(label_t)
is O(1) whatever the batch size; every factor is a mean over its samples (tokens for xtx and
Sketch A, sequences for Sketch B), i.e. already divided by the count (the layout of the reference
*_hin.pt / *_hout.pt files and of yaqa's accumulators). yaqa normalizes every factor to mean
diagonal 1 before use, so only the relative scale inside a factor matters. The counts are in the
file's __metadata__ (tokens, sequences) so sums can be recovered for merging shards.

Sequences: a Linear input of shape [..., T, n] (>= 3 dims) holds sequences of T tokens
(token_dim=-2; every other leading dim indexes sequences); a 2-D input [N, n] holds N independent
samples (sequences of one token) unless seq_len groups consecutive rows.

Labels are drawn with torch.multinomial from a generator seeded by (seed, batch index), so every
pass over the same batches redraws the same labels (what Sketch A's alternating passes need). The
model runs in eval() mode (no dropout) and its parameters get no .grad.

Several processes (torch.distributed, docs/distributed.md): under ``torchrun --nproc_per_node R``
(or any launcher setting WORLD_SIZE > 1) the script joins a process group (nccl when CUDA is
available, else gloo); collect() on an initialized group gives each rank the batches whose index
b has b % R == rank (every rank passes the same batch list; labels stay seeded by the global b),
merges each pass's accumulators over the ranks at the end of the pass (their pickled states,
all_gather_object, then merged in rank order 0, 1, ...: the same bits on every rank whatever the
backend's reduction order), so every
rank closes the pass with the same factors (Sketch A's next pass weights by them); the counts in
the metadata are the global ones, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import struct
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("xtx", "sketch-a", "sketch-b")
DEFAULT_TAGS = {"sketch-a": "a", "sketch-b": "b"}
SKETCH_B_CHUNK = 1 << 24  # values of the sequences handed to SketchB per call (f64: 128 MiB)


class CollectError(ValueError):
    """A usage or data error; the message names the function, argument and what was expected."""


def _yaqa():
    """The yaqa Python package (its accumulators do the sums). Imported when first needed; a
    checkout's build (build*/python) is found without installing."""
    try:
        import yaqa
        return yaqa
    except ImportError as first:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        import glob
        for d in sorted(glob.glob(os.path.join(root, "build*", "python"))):
            if os.path.isdir(os.path.join(d, "yaqa")) and d not in sys.path:
                sys.path.append(d)
                try:
                    import yaqa
                    return yaqa
                except ImportError:
                    sys.path.remove(d)
        raise CollectError(
            "the yaqa Python package is not importable (" + str(first) + "); the collector "
            "accumulates through it. Install it with `pip install ./python` from the repository "
            "(into a venv made with --system-site-packages, so that torch and numpy come from the "
            "system), or build it with `make build` (it lands in build/python; set "
            "PYTHONPATH=build/python). See docs/python.md.")


# ---------------------------------------------------------------------------------------------
# safetensors (written from the format description: 8-byte little-endian header length, JSON
# header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw data)

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER = 100 * 1024 * 1024  # refuse absurd headers when reading (corrupt files)


def _tensor_bytes(name: str, t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype not in _ST_DTYPES:
        raise CollectError(f"save_safetensors: tensor '{name}' has dtype {t.dtype}; expected "
                           f"one of {', '.join(str(d) for d in _ST_DTYPES)}")
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: same bits as int16
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    return t.numpy().astype(_NP_DTYPES[_ST_DTYPES[t.dtype]], copy=False).tobytes()


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str,
                     metadata: Optional[Dict[str, object]] = None) -> None:
    """Writes `tensors` (name -> tensor) to `path` in the safetensors format.

    Tensors are stored in insertion order, contiguous, little endian. `metadata` values are
    converted to strings (the format only allows str -> str). The header is padded with spaces
    to a multiple of 8 bytes so the data is 8-byte aligned.
    """
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: List[bytes] = []
    offset = 0
    for name, t in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CollectError(f"save_safetensors: invalid tensor name {name!r}")
        if not isinstance(t, torch.Tensor):
            raise CollectError(f"save_safetensors: '{name}' is a {type(t).__name__}; "
                               "expected a tensor")
        data = _tensor_bytes(name, t)
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load_safetensors(path: str):
    """Reads a safetensors file: returns (dict name -> torch.Tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise CollectError(f"load_safetensors: '{path}' is {len(raw)} bytes; expected >= 8")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > _MAX_HEADER or 8 + hlen > len(raw):
        raise CollectError(f"load_safetensors: '{path}': header length {hlen} does not fit the "
                           f"{len(raw)}-byte file")
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(raw)[8 + hlen:]
    out: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        if not 0 <= b <= e <= len(data):
            raise CollectError(f"load_safetensors: '{path}': tensor '{name}' offsets [{b}, {e}] "
                               f"outside the {len(data)}-byte data section")
        if dt == "BF16":
            arr = np.frombuffer(data[b:e], dtype="<i2").copy()
            t = torch.from_numpy(arr).view(torch.bfloat16)
        elif dt in _NP_DTYPES:
            t = torch.from_numpy(np.frombuffer(data[b:e], dtype=_NP_DTYPES[dt]).copy())
        else:
            raise CollectError(f"load_safetensors: '{path}': tensor '{name}' has dtype '{dt}'")
        if t.numel() != math.prod(shape):
            raise CollectError(f"load_safetensors: '{path}': tensor '{name}' has {t.numel()} "
                               f"elements; shape {shape} needs {math.prod(shape)}")
        out[name] = t.reshape(shape)
    return out, meta


# ---------------------------------------------------------------------------------------------
# packed lower triangle (torch.tril_indices order: (0,0),(1,0),(1,1),(2,0),...)

def pack_tril(h: torch.Tensor) -> torch.Tensor:
    """The lower triangle of the square matrix h as a 1-D tensor of n(n+1)/2 values."""
    if h.dim() != 2 or h.shape[0] != h.shape[1]:
        raise CollectError(f"pack_tril: argument 'h' must be square, got shape {list(h.shape)}")
    n = h.shape[0]
    i, j = torch.tril_indices(n, n)
    return h[i, j].clone()


def unpack_tril(p: torch.Tensor, n: Optional[int] = None) -> torch.Tensor:
    """The full symmetric matrix from its packed lower triangle (inverse of pack_tril)."""
    if p.dim() != 1:
        raise CollectError(f"unpack_tril: argument 'p' must be 1-D, got shape {list(p.shape)}")
    if n is None:  # n(n+1)/2 = len
        n = int((math.isqrt(8 * p.numel() + 1) - 1) // 2)
    if n * (n + 1) // 2 != p.numel():
        raise CollectError(f"unpack_tril: argument 'p' has {p.numel()} values; expected n(n+1)/2 "
                           f"for n = {n}")
    h = torch.zeros(n, n, dtype=p.dtype)
    i, j = torch.tril_indices(n, n)
    h[i, j] = p
    h[j, i] = p
    return h


# ---------------------------------------------------------------------------------------------
# collection

class _Layer:
    """Per-Linear state: the captured (x, y) of the current batch and the yaqa accumulators."""

    def __init__(self, name: str, module: nn.Linear):
        self.name, self.module = name, module
        self.n, self.m = module.in_features, module.out_features
        self.calls: List = []  # (x detached copy, y output in the graph) per call this batch
        self.xtx = None        # yaqa.SecondMoment (xtx without sketch-a)
        self.sa = None         # yaqa.SketchA (its pass 0 also gives xtx)
        self.sb = None         # yaqa.SketchB
        self.xtx_mean = None   # E[x x^T] (numpy), once pass 0 is closed
        self.tokens = self.sequences = self.pass_tokens = 0


def _resolve_layers(model: nn.Module, layers) -> List[_Layer]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if layers is None:
        chosen = linears
    elif isinstance(layers, str):
        rx = re.compile(layers)
        chosen = [(n, m) for n, m in linears if rx.search(n + ".weight")]
    elif callable(layers):
        chosen = [(n, m) for n, m in linears if layers(n + ".weight")]
    else:
        wanted = {s[:-len(".weight")] if s.endswith(".weight") else s for s in layers}
        names = {n for n, _ in linears}
        missing = sorted(wanted - names)
        if missing:
            raise CollectError(f"collect: argument 'layers' names {missing}, which are not "
                               f"nn.Linear modules of the model; expected some of {sorted(names)}")
        chosen = [(n, m) for n, m in linears if n in wanted]
    if not chosen:
        raise CollectError("collect: no nn.Linear module selected (argument 'layers' = "
                           f"{layers!r}; the model has {len(linears)} nn.Linear modules)")
    return [_Layer(n, m) for n, m in chosen]


def _logits_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise CollectError(f"collect: the model returned a {type(out).__name__}; expected logits "
                       "(a tensor [..., classes], an object with .logits, or a tuple starting "
                       "with the logits)")


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _sequences(x: torch.Tensor, token_dim: int, seq_len: Optional[int], what: str) -> torch.Tensor:
    """Reshapes a [..., n] layer tensor to [S, T, n]: S sequences of T tokens."""
    if x.dim() >= 3:
        d = token_dim % x.dim()
        if d == x.dim() - 1:
            raise CollectError(f"collect: argument 'token_dim' ({token_dim}) is the feature dim "
                               f"of {what} (shape {list(x.shape)})")
        x = x.movedim(d, -2)
        return x.reshape(-1, x.shape[-2], x.shape[-1])
    if x.dim() == 2:
        if seq_len is None:
            return x.unsqueeze(1)  # independent samples: one token per sequence
        if x.shape[0] % seq_len:
            raise CollectError(f"collect: {what} has {x.shape[0]} rows, not a multiple of "
                               f"argument 'seq_len' ({seq_len})")
        return x.reshape(-1, seq_len, x.shape[-1])
    raise CollectError(f"collect: {what} has shape {list(x.shape)}; expected >= 2 dims")


# ---------------------------------------------------------------------------------------------
# torch.distributed: each rank its share of the batches, the pass sums added up in rank order

def _dist_rank_world():
    """(rank, world size) of the initialized torch.distributed group, else (0, 1)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    """The sum of t over the ranks, on every rank. all_gather, then additions in rank order 0, 1,
    ...: all_reduce's order is the backend's (gloo, nccl rings), so its bits could differ."""
    import torch.distributed as dist
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    total = parts[0].clone()
    for p in parts[1:]:
        total += p
    return total


def _merge_over_ranks(acc, world: int):
    """The merge of every rank's accumulator, on every rank: the pickled states (yaqa's
    save_state bytes) all_gather_object'ed, then merged in rank order 0, 1, ... (the same bits on
    every rank). Sketch A merges the open pass (merge_pass)."""
    import pickle
    import torch.distributed as dist
    parts: List = [None] * world
    dist.all_gather_object(parts, pickle.dumps(acc))
    total = pickle.loads(parts[0])
    for p in parts[1:]:
        other = pickle.loads(p)
        total.merge_pass(other) if hasattr(total, "merge_pass") else total.merge(other)
    return total


def _reduce_pass(state: List["_Layer"], p_idx: int, counts: dict, world: int) -> None:
    """Replaces every rank's pass statistics (accumulators and token / sequence / batch counts) by
    their merge over the ranks; a rank without batches contributes empty accumulators."""
    for st in state:
        dev = st.module.weight.device
        c = torch.tensor([st.pass_tokens, st.sequences if p_idx == 0 else 0], dtype=torch.int64,
                         device=dev)
        c = _sum_over_ranks(c, world)
        st.pass_tokens = int(c[0])
        if p_idx == 0:
            st.sequences = int(c[1])
            if st.xtx is not None:
                st.xtx = _merge_over_ranks(st.xtx, world)
            if st.sb is not None:
                st.sb = _merge_over_ranks(st.sb, world)
        if st.sa is not None:
            st.sa = _merge_over_ranks(st.sa, world)
    if p_idx == 0:
        dev = state[0].module.weight.device
        counts["batches"] = int(_sum_over_ranks(
            torch.tensor([counts["batches"]], dtype=torch.int64, device=dev), world)[0])


def _init_distributed_from_env() -> bool:
    """Joins the process group a launcher (torchrun) describes when WORLD_SIZE > 1: nccl with
    CUDA, else gloo. Returns True when this call initialized it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist
    if dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def _is_one_shot(batches) -> bool:
    try:
        return iter(batches) is batches
    except TypeError:
        return False


def collect(model: nn.Module, batches, *, kind: Union[str, Sequence[str]] = "sketch-b",
            passes: int = 3, tag: Optional[str] = None, layers=None, sample_labels: bool = True,
            seed: int = 0, dtype: torch.dtype = torch.float64, token_dim: int = -2,
            seq_len: Optional[int] = None, progress: Optional[Callable[[str], None]] = None,
            info: Optional[dict] = None) -> Dict[str, torch.Tensor]:
    """Collects Hessians of the model's nn.Linear layers; returns {tensor name: full matrix}.

    model: any nn.Module whose output is logits [..., classes] (or has .logits / is a tuple
        starting with them). It runs in eval mode; its parameters get no .grad.
    batches: a re-iterable of batches (list, DataLoader without shuffling) or a zero-argument
        callable returning an iterable; a batch is passed as model(**b) for a dict, model(*b) for
        a tuple/list, model(b) otherwise. Sketch A iterates it `passes` times and needs the same
        batches in the same order each time. With sample_labels=False every batch must be a pair
        (inputs, labels) and the labels are used instead (empirical Fisher; not what YAQA uses).
    kind: "xtx", "sketch-a", "sketch-b", or a list of them (collected in the same passes: pass 0
        feeds xtx, Sketch B and Sketch A's pass 0).
    passes: Sketch A's number of passes (>= 2); ignored by the other kinds.
    tag: the sketch TAG in NAME.TAG.H_in/H_out; None gives "a" / "b"; "" gives NAME.H_in/H_out.
        With both sketches requested, tag must be None (their names would collide).
    layers: None (every nn.Linear), a regex searched in NAME (= module name + ".weight"), a
        predicate on NAME, or a list of module names / NAMEs.
    seed: labels of batch i are drawn from a generator seeded with seed * 1000003 + i.
    dtype: dtype of the returned tensors (sums are accumulated in float64).
    token_dim / seq_len: which dim of a Linear input indexes tokens (see the module doc).
    progress: called with a line of text after each pass.
    Under an initialized torch.distributed group, each rank takes the batches b with
    b % world_size == rank and the pass sums are added up over the ranks (module doc); every
    rank returns the same tensors.
    info: a dict, filled with the counts (tokens, sequences, batches, per-layer details incl.
        h_out_zero: no gradient reached the layer, yaqa-quantize then falls back to H_out = I).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        if k not in KINDS:
            raise CollectError(f"collect: argument 'kind' is {k!r}; expected one of {KINDS}")
    if not kinds:
        raise CollectError(f"collect: argument 'kind' is empty; expected one of {KINDS}")
    kinds = list(dict.fromkeys(kinds))
    if tag is not None and "sketch-a" in kinds and "sketch-b" in kinds:
        raise CollectError("collect: argument 'tag' must be None when both sketches are collected "
                           "(their tensors would get the same names)")
    if tag is not None and "." in tag:
        raise CollectError(f"collect: argument 'tag' ({tag!r}) must not contain '.'")
    if "sketch-a" in kinds and passes < 2:
        raise CollectError(f"collect: argument 'passes' is {passes}; Sketch A needs >= 2 (pass 0 "
                           "gives H_in, pass 1 the first H_out)")
    if dtype not in (torch.float32, torch.float64):
        raise CollectError(f"collect: argument 'dtype' is {dtype}; expected float32 or float64")
    want_a, want_b, want_x = "sketch-a" in kinds, "sketch-b" in kinds, "xtx" in kinds
    n_passes = passes if want_a else 1
    if n_passes > 1 and _is_one_shot(batches):
        raise CollectError("collect: argument 'batches' is a one-shot iterator but Sketch A makes "
                           f"{n_passes} passes; pass a list, a DataLoader or a callable")
    say = progress or (lambda s: None)
    yq = _yaqa()

    state = _resolve_layers(model, layers)
    for st in state:
        if want_x and not want_a:
            st.xtx = yq.SecondMoment(st.n)
        if want_a:
            st.sa = yq.SketchA(st.n, st.m, passes)
        if want_b:
            st.sb = yq.SketchB(st.n, st.m)
    rank, world = _dist_rank_world()
    acc = torch.float64
    hooks = []

    def make_hook(st: _Layer):
        def hook(module, inputs, output):
            # a float64 CPU copy (later in-place ops cannot touch it), for the yaqa accumulators
            x = inputs[0].detach().to(device="cpu", dtype=acc, copy=True)
            st.calls.append((x, output))
            # The rest of the model gets a copy, so an in-place op on it (relu_, +=) leaves the
            # tensor we differentiate against untouched.
            return output.clone()
        return hook

    was_training = model.training
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    counts = {"batches": 0}
    try:
        model.eval()
        for p in model.parameters():  # no .grad anywhere; Linear weights keep the graph alive
            p.requires_grad_(False)
        for st in state:
            st.module.weight.requires_grad_(True)
            hooks.append(st.module.register_forward_hook(make_hook(st)))
        for p_idx in range(n_passes):
            need_g = want_b or (want_a and p_idx > 0)
            t_pass = time.time()
            for st in state:
                st.pass_tokens = 0
                if st.sa is not None:
                    st.sa.begin_pass()
            it = batches() if callable(batches) and not isinstance(batches, nn.Module) else batches
            for b_idx, batch in enumerate(it):
                if b_idx % world != rank:  # another rank's batch (labels stay seeded by b_idx)
                    continue
                if sample_labels:
                    inputs, labels = batch, None
                else:
                    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                        raise CollectError(f"collect: batch {b_idx} is not a pair (inputs, "
                                           "labels); sample_labels=False needs one")
                    inputs, labels = batch
                for st in state:
                    st.calls = []
                grads = None
                # no graph when no gradient is needed (X^T X only, Sketch A's pass 0)
                with torch.enable_grad() if need_g else torch.no_grad():
                    logits = _logits_of(_call(model, inputs))
                    if need_g:
                        flat = logits.reshape(-1, logits.shape[-1])
                        if flat.dtype not in (torch.float32, torch.float64):
                            flat = flat.float()
                        if labels is None:  # true Fisher: labels from the model's own softmax
                            gen = torch.Generator().manual_seed(seed * 1000003 + b_idx)
                            probs = torch.softmax(flat.detach().to(torch.float64), dim=-1).cpu()
                            labels_flat = torch.multinomial(probs, 1, generator=gen).squeeze(1)
                        else:
                            labels_flat = labels.reshape(-1)
                        loss = F.cross_entropy(flat, labels_flat.to(flat.device), reduction="sum")
                        outs = [y for st in state for _, y in st.calls]
                        grads = torch.autograd.grad(loss, outs, allow_unused=True) if outs else ()
                k = 0
                for st in state:
                    for x, y in st.calls:
                        g = None
                        if grads is not None:
                            g = grads[k]
                            k += 1
                            # None: this output does not reach the loss (no gradient)
                            g = (torch.zeros(y.shape, dtype=acc) if g is None
                                 else g.detach().to(device="cpu", dtype=acc))
                        _accumulate(st, x, g, p_idx, token_dim, seq_len)
                    st.calls = []
                if p_idx == 0:
                    counts["batches"] += 1
            if world > 1:  # every rank closes the pass from the same sums
                _reduce_pass(state, p_idx, counts, world)
            for st in state:
                if st.pass_tokens == 0:
                    raise CollectError(f"collect: pass {p_idx} gave no tokens to '{st.name}' "
                                       "(empty 'batches', or the layer is never called)")
                if p_idx == 0:
                    st.tokens = st.pass_tokens
                elif st.pass_tokens != st.tokens:
                    raise CollectError(f"collect: pass {p_idx} gave {st.pass_tokens} tokens to "
                                       f"'{st.name}', pass 0 gave {st.tokens}; Sketch A needs the "
                                       "same batches in every pass")
                _close_pass(st, p_idx)
            dt = max(time.time() - t_pass, 1e-9)
            say(f"pass {p_idx + 1}/{n_passes}: {state[0].pass_tokens} tokens into {len(state)} "
                f"layer{'s' if len(state) > 1 else ''} ({state[0].name}, ...), {dt:.2f} s, "
                f"{state[0].pass_tokens / dt:.0f} tokens/s")
    finally:
        for h in hooks:
            h.remove()
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        model.train(was_training)
        for st in state:
            st.calls = []

    out: Dict[str, torch.Tensor] = {}
    for st in state:
        name = st.name + ".weight"
        if want_x:
            out[name + ".H"] = _tensor(st.xtx_mean, dtype)
        if want_a:
            base = _tagged(name, DEFAULT_TAGS["sketch-a"] if tag is None else tag)
            out[base + ".H_in"] = _tensor(st.sa.h_in(), dtype)
            out[base + ".H_out"] = _tensor(st.sa.h_out(), dtype)
        if want_b:
            base = _tagged(name, DEFAULT_TAGS["sketch-b"] if tag is None else tag)
            out[base + ".H_in"] = _tensor(st.sb.h_in(), dtype)
            out[base + ".H_out"] = _tensor(st.sb.h_out(), dtype)
    if info is not None:
        first = state[0]
        info.update(tokens=first.tokens, sequences=first.sequences, batches=counts["batches"],
                    layers={st.name + ".weight": {"tokens": st.tokens, "sequences": st.sequences,
                                                  "h_out_zero": bool(
                                                      (st.sa is not None and st.sa.h_out_is_zero) or
                                                      (st.sb is not None and st.sb.h_out_is_zero))}
                            for st in state})
    return out


def _tagged(name: str, tag: str) -> str:
    return f"{name}.{tag}" if tag else name


def _tensor(a, dtype: torch.dtype) -> torch.Tensor:
    # the accumulators' factors are exactly symmetric (unpacked from their lower triangle)
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _accumulate(st: _Layer, x: torch.Tensor, g: Optional[torch.Tensor], p_idx: int,
                token_dim: int, seq_len: Optional[int]) -> None:
    """Hands one call's (x, g) of layer st to its accumulators (pass p_idx). x and g are float64
    CPU tensors (copies): the package reads them in place, or makes one column-major copy."""
    xs = _sequences(x, token_dim, seq_len, f"the input of '{st.name}'")  # [S, T, n]
    xt = xs.reshape(-1, st.n)
    st.pass_tokens += xt.shape[0]
    if p_idx == 0:
        st.sequences += xs.shape[0]
        if st.xtx is not None:
            st.xtx.add(xt)
        if st.sa is not None:
            st.sa.add(xt)
        if st.sb is not None:
            gs = _sequences(g, token_dim, seq_len, f"the output gradient of '{st.name}'")
            # a few sequences per call: bounds the column-major copies the package makes
            chunk = max(1, SKETCH_B_CHUNK // (xs.shape[1] * (st.m + st.n) or 1))
            for s0 in range(0, xs.shape[0], chunk):
                st.sb.add_sequences(xs[s0:s0 + chunk], gs[s0:s0 + chunk])
    elif st.sa is not None:
        gs = _sequences(g, token_dim, seq_len, f"the output gradient of '{st.name}'")
        st.sa.add(xt, gs.reshape(-1, st.m))


def _close_pass(st: _Layer, p_idx: int) -> None:
    """Closes the pass in the accumulators (yaqa::sketch_a::end_pass's rules)."""
    if st.sa is not None:
        st.sa.end_pass()
    if p_idx == 0:
        st.xtx_mean = st.sa.h_in() if st.sa is not None else (
            st.xtx.mean() if st.xtx is not None else None)


# ---------------------------------------------------------------------------------------------
# the built-in demo model and data

class TinyLM(nn.Module):
    """A small random-init LM: each position sees the embeddings of its `context` previous
    tokens (concatenated, zero-padded at the start), then fc1 -> GELU -> fc2 -> logits.

    Two nn.Linear layers, fc1 [hidden, context*embed] and fc2 [vocab, hidden]; the defaults give
    64 -> 128 -> 64 (multiples of 16, so 16x16 tiles divide them). `logit_scale` multiplies the
    default fc2 init so the softmax is peaked like a trained model's rather than near uniform.
    """

    def __init__(self, vocab: int = 64, context: int = 4, embed: int = 16, hidden: int = 128,
                 seed: int = 0, logit_scale: float = 4.0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.vocab, self.context = vocab, context
        f32 = torch.float32  # explicit: independent of torch.set_default_dtype
        self.embed = nn.Embedding(vocab, embed, dtype=f32)
        self.fc1 = nn.Linear(context * embed, hidden, dtype=f32)
        self.fc2 = nn.Linear(hidden, vocab, dtype=f32)
        with torch.no_grad():  # seeded init independent of the global RNG
            self.embed.weight.copy_(torch.randn(vocab, embed, generator=gen, dtype=f32))
            for lin, scale in ((self.fc1, 1.0), (self.fc2, logit_scale)):
                bound = 1.0 / math.sqrt(lin.in_features)
                w = torch.rand(lin.weight.shape, generator=gen, dtype=f32)
                lin.weight.copy_((w * 2 - 1) * bound * scale)
                b = torch.rand(lin.bias.shape, generator=gen, dtype=f32)
                lin.bias.copy_((b * 2 - 1) * bound)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, vocab]
        e = self.embed(tokens)                                 # [B, T, E]
        pad = e.new_zeros(e.shape[0], self.context - 1, e.shape[2])
        e = torch.cat([pad, e], dim=1)
        T = tokens.shape[1]
        window = torch.cat([e[:, k:k + T] for k in range(self.context)], dim=-1)  # [B, T, C*E]
        return self.fc2(F.gelu(self.fc1(window)))


def markov_batches(vocab: int = 64, batches: int = 8, batch_size: int = 8, seq_len: int = 64,
                   seed: int = 0, chain_seed: int = 1234) -> List[torch.Tensor]:
    """Synthetic token batches [batch_size, seq_len] from a fixed random first-order Markov chain
    (peaked transitions, so inputs are correlated like text). `chain_seed` fixes the chain;
    `seed` the sampled sequences (use another seed for held-out data)."""
    cg = torch.Generator().manual_seed(chain_seed)
    trans = torch.softmax(3.0 * torch.randn(vocab, vocab, generator=cg, dtype=torch.float64), -1)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        tok = torch.empty(batch_size, seq_len, dtype=torch.int64)
        tok[:, 0] = torch.randint(vocab, (batch_size,), generator=g)
        for t in range(1, seq_len):
            tok[:, t] = torch.multinomial(trans[tok[:, t - 1]], 1, generator=g).squeeze(1)
        out.append(tok)
    return out


def _load_factory(spec: str):
    path, sep, fn = spec.rpartition(":")
    if not sep or not path or not fn:
        raise CollectError(f"--model-module: '{spec}' is not PATH.py:FACTORY")
    mod_spec = importlib.util.spec_from_file_location("yaqa_user_model", path)
    if mod_spec is None or mod_spec.loader is None:
        raise CollectError(f"--model-module: cannot load '{path}'")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    if not hasattr(mod, fn):
        raise CollectError(f"--model-module: '{path}' has no '{fn}'")
    return getattr(mod, fn)


def weights_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state_dict with floating tensors as F32 (what yaqa-quantize reads as --weights)."""
    return {k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach())
            for k, v in model.state_dict().items()}


def gguf_tensor_names(hessians: Dict[str, torch.Tensor], arch: str,
                      n_blocks: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Renames the Hessians of HF weight names (``model.layers.0.self_attn.q_proj.weight.H``) to
    the GGUF tensor names llama.cpp's converter gives those weights (``blk.0.attn_q.weight.H``),
    with gguf-py's tensor name map for the architecture ``arch`` (e.g. "llama", "qwen2";
    ``pip install gguf``). ``n_blocks``: the number of transformer blocks (default: one more than
    the largest layer index in the names).

    Only ``NAME.H`` (``--kind xtx``) is renamed: llama.cpp's converter permutes the rows of some
    weights (attn_q / attn_k for llama), which leaves H_in unchanged but not H_out, so Kronecker
    factors are refused rather than written in a row order the GGUF does not have. Raises
    CollectError for an unknown architecture, a weight with no GGUF name, or an H_in / H_out."""
    try:
        import gguf  # llama.cpp's own Python package (PyPI gguf)
    except ImportError as e:
        raise CollectError(f"--gguf-names needs llama.cpp's Python package: pip install gguf ({e})")
    archs = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in archs:
        raise CollectError(f"--gguf-names: unknown architecture '{arch}'; gguf-py knows "
                           f"{', '.join(sorted(archs)[:12])}, ... ({len(archs)} in all)")
    weights = {}
    for key in hessians:
        if not key.endswith(".H"):
            raise CollectError(f"--gguf-names: '{key}' is a Kronecker factor; GGUF names are written "
                               "for --kind xtx only (llama.cpp's converter permutes some weights' rows, "
                               "which H_out would have to follow)")
        weights[key] = key[:-2]
    if n_blocks is None:
        idx = [int(m.group(1)) for w in weights.values() for m in [re.search(r"\.(\d+)\.", w)] if m]
        n_blocks = max(idx) + 1 if idx else 0
    tmap = gguf.get_tensor_name_map(archs[arch], n_blocks)
    out = {}
    for key, w in weights.items():
        name = tmap.get_name(w, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise CollectError(f"--gguf-names: weight '{w}' has no GGUF name for architecture '{arch}' "
                               f"({n_blocks} blocks); use --layers to leave it out")
        if name + ".H" in out:
            raise CollectError(f"--gguf-names: two weights map to the GGUF name '{name}'")
        out[name + ".H"] = hessians[key]
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Collect X^T X / Sketch A / Sketch B Hessians of every nn.Linear of a model "
                    "into safetensors (NAME.H, NAME.TAG.H_in, NAME.TAG.H_out) for yaqa-quantize.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo-model", choices=["tiny"],
                     help="built-in random-init model (TinyLM, 64 -> 128 -> 64) on a synthetic "
                          "Markov token stream; no download")
    src.add_argument("--model-module", metavar="PATH.py:FACTORY",
                     help="FACTORY() returns a model or (model, batches); batches: a list / "
                          "DataLoader / zero-arg callable (default: synthetic tokens, needs "
                          "--vocab)")
    ap.add_argument("--out", required=True, help="output safetensors file for the Hessians")
    ap.add_argument("--kind", default="sketch-b",
                    help="xtx, sketch-a, sketch-b, or a comma-separated list (default sketch-b)")
    ap.add_argument("--passes", type=int, default=3, help="Sketch A passes, >= 2 (default 3)")
    ap.add_argument("--sketch", metavar="TAG", default=None,
                    help="sketch tag in NAME.TAG.H_in/H_out (default: a / b; '' for none)")
    ap.add_argument("--layers", metavar="REGEX", default=None,
                    help="only the Linear layers whose NAME matches (re.search)")
    ap.add_argument("--packed", action="store_true",
                    help="store each matrix as its packed lower triangle (1-D, tril_indices order)")
    ap.add_argument("--dtype", choices=["F32", "F64"], default="F64", help="stored dtype")
    ap.add_argument("--seed", type=int, default=0, help="label sampling seed (and demo data seed)")
    ap.add_argument("--batches", type=int, default=8, help="synthetic batches (default 8)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per synthetic batch")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per synthetic sequence")
    ap.add_argument("--vocab", type=int, default=None, help="vocab of the synthetic tokens")
    ap.add_argument("--model-seed", type=int, default=0, help="init seed of the demo model")
    ap.add_argument("--weights-out", metavar="W.safetensors",
                    help="also write the model's state_dict (floating tensors as F32)")
    ap.add_argument("--gguf-names", metavar="ARCH", default=None,
                    help="name the Hessians by the GGUF tensor names of llama.cpp's converter for "
                         "architecture ARCH (e.g. llama), for a GGUF --weights; --kind xtx only; "
                         "needs PyPI gguf")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        if not a.quiet:
            print(f"collect_hessians: {msg}", file=sys.stderr)

    started = _init_distributed_from_env()
    rank, world = _dist_rank_world()
    if rank > 0:  # rank 0 reports and writes
        a.quiet = True
    try:
        kinds = [k.strip() for k in a.kind.split(",") if k.strip()]
        batches = None
        if a.demo_model:
            model = TinyLM(seed=a.model_seed)
            vocab = model.vocab
        else:
            made = _load_factory(a.model_module)()
            model, batches = made if isinstance(made, tuple) else (made, None)
            vocab = a.vocab
            if not isinstance(model, nn.Module):
                raise CollectError(f"--model-module: the factory returned a "
                                   f"{type(model).__name__}; expected an nn.Module or "
                                   "(nn.Module, batches)")
        if batches is None:
            if vocab is None:
                raise CollectError("--vocab is required when the factory returns no batches")
            batches = markov_batches(vocab, a.batches, a.batch_size, a.seq_len, seed=a.seed)
        t0 = time.time()
        counts: dict = {}
        H = collect(model, batches, kind=kinds, passes=a.passes, tag=a.sketch, layers=a.layers,
                    seed=a.seed, dtype=torch.float64 if a.dtype == "F64" else torch.float32,
                    progress=log, info=counts)
        if a.gguf_names:
            H = gguf_tensor_names(H, a.gguf_names)
        if a.packed:
            H = {k: pack_tril(v) for k, v in H.items()}
        meta = {"format": "yaqa-hessians", "kind": ",".join(kinds), "passes": a.passes,
                "tags": ",".join(DEFAULT_TAGS[k] if a.sketch is None else a.sketch
                                 for k in kinds if k in DEFAULT_TAGS), "seed": a.seed,
                "packed": int(a.packed), "tokens": counts["tokens"],
                "sequences": counts["sequences"], "batches": counts["batches"],
                "scale": "mean over samples (tokens: H, sketch-a; sequences: sketch-b); "
                         "loss = sum of CE to labels sampled from the model's softmax",
                "model": a.demo_model or a.model_module, "torch": torch.__version__}
        if world > 1:
            meta["ranks"] = world
        if rank > 0:
            return 0
        save_safetensors(H, a.out, meta)
        log(f"wrote {len(H)} tensors to {a.out} ({counts['tokens']} tokens, "
            f"{counts['sequences']} sequences, {world} rank{'s' if world > 1 else ''}, "
            f"{time.time() - t0:.2f} s)")
        if a.weights_out:
            W = weights_dict(model)
            save_safetensors(W, a.weights_out, {"format": "pt", "model": meta["model"]})
            log(f"wrote {len(W)} tensors to {a.weights_out}")
    except CollectError as e:
        print(f"collect_hessians: error: {e}", file=sys.stderr)
        return 1
    finally:
        if started:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
