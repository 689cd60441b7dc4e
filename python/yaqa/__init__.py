"""yaqa: Hessian-aware adaptive rounding (YAQA, LDLQ, GPTQ, RTN) of neural-network weights.

The algorithms are the C++ library's (include/yaqa/); this package binds them (module
yaqa._yaqa, nanobind). See docs/python.md.

- Accumulators: SecondMoment (E[x x^T]), Diagonal (its diagonal), SketchA, SketchB: add
  batches (numpy arrays or torch CPU tensors, float32 / float64), merge, read the factors as
  numpy arrays, pickle (exact round trip).
- Quantizers: int_grid, lloyd_max, fp4, e8p, trellis, gguf (llama.cpp's block types).
- quantize_layer(W, H_in, H_out=None, method=..., quantizer=..., **options) -> dict.
- quantize_model(model, hessians, ...): every nn.Linear in place (yaqa.model).
- Errors: yaqa.Error and its subclasses, one per C++ yaqa::error class.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ._yaqa import (  # noqa: F401
    CudaError,
    Diagonal,
    Error,
    FormatError,
    InvalidArgument,
    IoError,
    NonFiniteError,
    NumericalError,
    Quantizer,
    SecondMoment,
    ShapeError,
    SketchA,
    SketchB,
    __version__,
    e8p,
    fp4,
    gguf,
    int_grid,
    lloyd_max,
    trellis,
)
from . import _yaqa

METHODS = ("yaqa", "ldlq", "gptq", "rtn")
_QUANTIZERS = {"int": int_grid, "int_grid": int_grid, "lloyd": lloyd_max, "lloyd_max": lloyd_max,
               "fp4": fp4, "e8p": e8p, "trellis": trellis, "gguf": gguf}


def make_quantizer(quantizer: Any = None, **options) -> Quantizer:
    """A Quantizer from a Quantizer (returned as is), None (int_grid(bits=4)) or a name
    ("int", "lloyd", "fp4", "e8p", "trellis") with that factory's keyword options."""
    if quantizer is None:
        quantizer = "int"
    if isinstance(quantizer, Quantizer):
        if options:
            raise InvalidArgument(f"yaqa.make_quantizer: options {sorted(options)} given with a "
                                  "Quantizer object; pass them to its factory instead")
        return quantizer
    if isinstance(quantizer, str):
        if quantizer not in _QUANTIZERS:
            raise InvalidArgument(f"yaqa: argument 'quantizer' is {quantizer!r}; expected one of "
                                  f"{sorted(_QUANTIZERS)} or a yaqa.Quantizer")
        return _QUANTIZERS[quantizer](**options)
    raise InvalidArgument(f"yaqa: argument 'quantizer' is a {type(quantizer).__name__}; expected a "
                          "name or a yaqa.Quantizer")


_QUANTIZER_KEYS = ("bits", "sym", "group_size", "mse", "l", "k", "v", "code", "type", "importance")


def quantize_layer(W, H_in, H_out=None, method: str = "yaqa", quantizer: Any = None, *,
                   threads: int = 0, **options) -> Dict[str, Any]:
    """Quantizes one linear layer's weight W (m x n, out x in) with its Hessian factors.

    H_in: n x n (E[x x^T] for gptq / ldlq, Sketch A/B's H_in for yaqa); H_out: m x m or None
    (H_out = I). method: "yaqa", "ldlq", "gptq" or "rtn". quantizer: a yaqa.Quantizer
    (int_grid(...), e8p(...), ...) or a name, with bits= / group_size= / ... among the
    options. threads: OpenMP threads (0: all cores; the result does not depend on it).
    options: tile_rows, tile_cols, incoherence, seed, damp, damp_steps, zero_dead_inputs,
    gptq_block, act_order, static_groups, report_baseline, cd_sweeps, refine ("none", "lsi",
    "sde"), lwc, refine_steps (rounding_options in include/yaqa/rounding/layer.hpp).

    Arrays are computed in float32 (the layer driver's instances): float64 or non-column-major
    inputs are copied once, with the GIL released. Returns a dict: weights (m x n float32,
    dequantized, original basis), codes, params (dict of arrays [groups, rows]), group_index,
    rotated, seed_in / seed_out, signs_in / signs_out, transform_in / transform_out, report
    (a dict: relative_proxy, baseline_relative_proxy, damps, times, ...).
    """
    qopts = {k: options.pop(k) for k in list(options) if k in _QUANTIZER_KEYS}
    q = make_quantizer(quantizer, **qopts)
    if not isinstance(method, str):
        raise InvalidArgument(f"yaqa.quantize_layer: argument 'method' must be a str, got "
                              f"{type(method).__name__}")
    return _yaqa._quantize_layer(W, H_in, H_out, method, q, threads, options)


def quantize_model(model, hessians, **kwargs):
    """See yaqa.model.quantize_model (needs torch)."""
    from .model import quantize_model as qm
    return qm(model, hessians, **kwargs)


__all__ = [
    "Error", "InvalidArgument", "ShapeError", "NonFiniteError", "NumericalError", "IoError",
    "FormatError", "CudaError", "SecondMoment", "Diagonal", "SketchA", "SketchB", "Quantizer",
    "int_grid", "lloyd_max", "fp4", "e8p", "trellis", "gguf", "make_quantizer", "quantize_layer",
    "quantize_model", "METHODS", "__version__",
]
