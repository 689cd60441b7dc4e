"""Bad input raises the mapped exception class with the library's message; never a crash."""
import numpy as np
import pytest

import yaqa
from conftest import spd


def test_hierarchy():
    assert issubclass(yaqa.InvalidArgument, yaqa.Error) and issubclass(yaqa.InvalidArgument, ValueError)
    assert issubclass(yaqa.ShapeError, yaqa.InvalidArgument)
    assert issubclass(yaqa.NonFiniteError, yaqa.InvalidArgument)
    assert issubclass(yaqa.NumericalError, yaqa.Error) and not issubclass(yaqa.NumericalError, ValueError)
    assert issubclass(yaqa.FormatError, yaqa.IoError) and issubclass(yaqa.IoError, OSError)
    assert issubclass(yaqa.CudaError, yaqa.Error) and issubclass(yaqa.Error, Exception)
    assert yaqa.Error.__module__ == "yaqa"


def test_accumulator_errors(rng):
    acc = yaqa.SecondMoment(8)
    with pytest.raises(yaqa.ShapeError, match=r"argument 'x' \(batch 0 of second_moment\) must be T x 8"):
        acc.add(np.zeros((3, 7)))
    x = rng.standard_normal((4, 8))
    x[2, 5] = np.nan
    with pytest.raises(yaqa.NonFiniteError, match="batch 0"):
        acc.add(x)
    assert acc.count == 0  # nothing was added
    with pytest.raises(yaqa.InvalidArgument, match="float32 or float64, got int64"):
        acc.add(np.zeros((3, 8), dtype=np.int64))
    with pytest.raises(yaqa.InvalidArgument, match="must be 2-D, got shape"):
        acc.add(np.zeros(8))
    with pytest.raises(yaqa.InvalidArgument, match="no tokens"):
        acc.mean()
    with pytest.raises(yaqa.InvalidArgument, match="'n' must be >= 1"):
        yaqa.SecondMoment(0)
    with pytest.raises(yaqa.InvalidArgument, match="precision"):
        yaqa.SecondMoment(3, precision="half")
    with pytest.raises(yaqa.InvalidArgument, match="threads"):
        yaqa.SecondMoment(3, threads=-1)
    with pytest.raises(yaqa.ShapeError):
        acc.merge(yaqa.SecondMoment(9))
    with pytest.raises(TypeError):
        acc.add([[1.0] * 8])  # not an array: nanobind's TypeError


def test_sketch_errors(rng):
    sa = yaqa.SketchA(4, 3, 2)
    with pytest.raises(yaqa.InvalidArgument, match="no pass is open"):
        sa.add(np.zeros((2, 4)))
    with pytest.raises(yaqa.InvalidArgument, match="'passes' must be >= 2"):
        yaqa.SketchA(4, 3, 1)
    sa.begin_pass()
    with pytest.raises(yaqa.InvalidArgument, match="same dtype"):
        sa.add(np.zeros((2, 4)), np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(yaqa.InvalidArgument, match="saw no tokens"):
        sa.end_pass()
    with pytest.raises(yaqa.InvalidArgument, match="H_in is available once pass 0"):
        sa.h_in()
    sb = yaqa.SketchB(4, 3)
    with pytest.raises(yaqa.ShapeError, match="argument 'g'"):
        sb.add_sequence(np.zeros((2, 4)), np.zeros((3, 3)))
    with pytest.raises(yaqa.InvalidArgument, match="3-D"):
        sb.add_sequences(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(yaqa.InvalidArgument, match="path"):
        yaqa.SketchB(4, 3, path="fast")


def test_quantize_layer_errors(rng):
    w = rng.standard_normal((16, 32)).astype(np.float32)
    h = spd(rng, 32)
    with pytest.raises(yaqa.ShapeError):
        yaqa.quantize_layer(w, np.zeros((32, 31)), method="ldlq")
    with pytest.raises(yaqa.ShapeError):
        yaqa.quantize_layer(w, spd(rng, 30), method="ldlq")
    bad = h.copy()
    bad[3, 3] = np.inf
    with pytest.raises(yaqa.NonFiniteError):
        yaqa.quantize_layer(w, bad, method="ldlq")
    with pytest.raises(yaqa.InvalidArgument, match="'method'"):
        yaqa.quantize_layer(w, h, method="awq")
    with pytest.raises(yaqa.InvalidArgument, match="unknown option 'tile'"):
        yaqa.quantize_layer(w, h, method="ldlq", tile=16)
    with pytest.raises(yaqa.InvalidArgument, match="must be a bool"):
        yaqa.quantize_layer(w, h, method="ldlq", incoherence=1)
    with pytest.raises(yaqa.ShapeError, match="tile"):
        yaqa.quantize_layer(w, h, spd(rng, 16), method="yaqa", tile_rows=7)
    with pytest.raises(yaqa.InvalidArgument, match="'W' must be float32 or float64"):
        yaqa.quantize_layer(w.astype(np.float16), h)
    with pytest.raises(yaqa.InvalidArgument, match="gptq needs a scalar quantizer"):
        yaqa.quantize_layer(w, h, method="gptq", quantizer=yaqa.e8p())
    with pytest.raises(yaqa.InvalidArgument):
        yaqa.int_grid(bits=1)
    with pytest.raises(yaqa.InvalidArgument, match="trellis code"):
        yaqa.trellis(code="4mad")
    with pytest.raises(yaqa.InvalidArgument, match="'quantizer'"):
        yaqa.quantize_layer(w, h, quantizer="awq")


def test_torch_tensor_that_requires_grad(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((3, 4)))
    a, b = yaqa.SecondMoment(4), yaqa.SecondMoment(4)
    a.add(x.clone().requires_grad_(True))  # read only: accepted like its .detach()
    b.add(x)
    assert np.array_equal(a.sum(), b.sum())


def test_no_crash_on_odd_arrays(rng):
    acc = yaqa.SecondMoment(4)
    acc.add(np.zeros((0, 4)))  # empty batch: counted, nothing added
    assert acc.batches == 1 and acc.count == 0
    acc.add(np.ones((5, 8))[:, ::2])  # strided
    acc.add(np.broadcast_to(np.arange(4.0), (3, 4)))  # zero stride: copied
    assert acc.count == 8
    with pytest.raises(yaqa.InvalidArgument, match="2-D"):
        acc.add(np.zeros((2, 2, 4)))
