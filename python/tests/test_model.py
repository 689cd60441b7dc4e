"""quantize_model: every nn.Linear with Hessians replaced in place by quantize_layer's weights."""
import numpy as np
import pytest

import yaqa

torch = pytest.importorskip("torch")
nn = torch.nn


def model_and_hessians(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 16))
    accs = {}

    def hook(name, n):
        accs[name] = yaqa.SecondMoment(n)
        return lambda mod, inp, out: accs[name].add(inp[0].detach().reshape(-1, n))

    hs = [m.register_forward_hook(hook(f"{k}.weight", m.in_features))
          for k, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(7, 5, 32))
    for h in hs:
        h.remove()
    return model, {k + ".H": torch.from_numpy(a.mean()) for k, a in accs.items()}


def test_quantize_model_matches_quantize_layer():
    model, H = model_and_hessians()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    del H["4.weight.H"]  # the last layer has no Hessian: left alone
    res = yaqa.quantize_model(model, H, method="ldlq", quantizer="int", bits=3, seed=2)
    assert sorted(res) == ["0.weight", "2.weight"]
    for name in res:
        ref = yaqa.quantize_layer(before[name].numpy(), H[name + ".H"].numpy(), None, "ldlq",
                                  yaqa.int_grid(bits=3), seed=2)
        assert np.array_equal(model.state_dict()[name].numpy(), ref["weights"])
        assert np.array_equal(res[name]["codes"], ref["codes"]) and "weights" not in res[name]
        assert not torch.equal(model.state_dict()[name], before[name])
    assert torch.equal(model.state_dict()["4.weight"], before["4.weight"])
    assert torch.equal(model.state_dict()["0.bias"], before["0.bias"])


def test_quantize_model_yaqa_factors_and_packed():
    model, H = model_and_hessians(1)
    K = {}
    for k, v in H.items():
        name = k[:-2]
        n_out = model.state_dict()[name].shape[0]
        i, j = torch.tril_indices(v.shape[0], v.shape[0])
        K[name + ".b.H_in"] = v[i, j]  # packed lower triangle, as collect_hessians --packed
        K[name + ".b.H_out"] = torch.eye(n_out, dtype=torch.float64)
    res = yaqa.quantize_model(model, K, quantizer=yaqa.int_grid(bits=4))
    assert len(res) == 3 and all(r["report"]["method"] == "yaqa" for r in res.values())


def test_quantize_model_errors():
    model, H = model_and_hessians()
    with pytest.raises(yaqa.InvalidArgument, match="no nn.Linear"):
        yaqa.quantize_model(model, {}, method="ldlq")
    with pytest.raises(yaqa.InvalidArgument, match="'method'"):
        yaqa.quantize_model(model, H, method="awq")
