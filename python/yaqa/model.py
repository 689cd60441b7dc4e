"""quantize_model: every nn.Linear of a torch model quantized in place with its Hessians."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional, Union

from . import InvalidArgument, make_quantizer, quantize_layer


def _factor(hessians: Dict[str, Any], key: str):
    import numpy as np
    t = hessians[key]
    if hasattr(t, "detach"):  # torch tensor
        t = t.detach().cpu()
    a = np.asarray(t)
    if a.ndim == 1:  # packed lower triangle (tools/collect_hessians.py --packed)
        n = int((np.sqrt(8 * a.size + 1) - 1) // 2)
        if n * (n + 1) // 2 != a.size:
            raise InvalidArgument(f"yaqa.quantize_model: hessian '{key}' is 1-D with {a.size} values, "
                                  "not a packed triangle n(n+1)/2")
        full = np.zeros((n, n), dtype=a.dtype)
        i, j = np.tril_indices(n)
        full[i, j] = a
        full[j, i] = a
        a = full
    return a


def quantize_model(model, hessians: Dict[str, Any], *, method: str = "yaqa", quantizer: Any = None,
                   tag: Optional[str] = None, layers: Union[None, str, Callable[[str], bool]] = None,
                   threads: int = 0, progress: Optional[Callable[[str], None]] = None,
                   **options) -> Dict[str, Dict[str, Any]]:
    """Quantizes every nn.Linear of `model` that has Hessians, replacing its weight in place
    with the dequantized weight; returns {weight name: quantize_layer's result without
    "weights"} (codes, params, report, ...).

    hessians: {name: tensor or array}, as tools/collect_hessians.py writes them (load the file
    with collect_hessians.load_safetensors): NAME.H for gptq / ldlq / rtn, NAME.TAG.H_in and
    NAME.TAG.H_out for yaqa (NAME = module name + ".weight"; TAG: `tag`, default "b" then "a",
    "" for NAME.H_in). A linear without its factors is left alone. layers: a regex searched in
    NAME or a predicate on NAME. method / quantizer / threads / options: as quantize_layer.
    """
    import torch
    import torch.nn as nn

    q = make_quantizer(quantizer, **{k: options.pop(k) for k in list(options)
                                     if k in ("bits", "sym", "group_size", "mse", "l", "k", "v", "code",
                                             "type", "importance")})
    rx = re.compile(layers) if isinstance(layers, str) else None
    say = progress or (lambda s: None)
    out: Dict[str, Dict[str, Any]] = {}
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        name = mod_name + ".weight"
        if rx is not None and not rx.search(name):
            continue
        if callable(layers) and not layers(name):
            continue
        if method == "yaqa":
            tags = [tag] if tag is not None else ["b", "a", ""]
            base = next((f"{name}.{t}" if t else name for t in tags
                         if (f"{name}.{t}" if t else name) + ".H_in" in hessians), None)
            if base is None:
                continue
            h_in, h_out = _factor(hessians, base + ".H_in"), _factor(hessians, base + ".H_out")
        else:
            if name + ".H" not in hessians:
                continue
            h_in, h_out = _factor(hessians, name + ".H"), None
        w = mod.weight.detach().cpu()
        r = quantize_layer(w.float(), h_in, h_out, method, q, threads=threads, **dict(options))
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(r.pop("weights")).to(mod.weight.dtype))
        rep = r["report"]
        say(f"{name}: {rep['rows']}x{rep['cols']} relative proxy {rep['relative_proxy']:.4g} "
            f"({rep['seconds']:.2f} s)")
        out[name] = r
    if not out:
        raise InvalidArgument("yaqa.quantize_model: no nn.Linear of the model has Hessians for method "
                              f"'{method}' in argument 'hessians' ({len(hessians)} tensors)")
    return out
