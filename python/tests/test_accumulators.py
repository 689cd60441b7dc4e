"""The accumulators against numpy references, pickling, layouts and lifetimes."""
import gc
import pickle
import weakref

import numpy as np
import pytest

import yaqa

DTYPES = [np.float32, np.float64]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-300))


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_moment_matches_numpy(rng, dtype):
    n = 37
    acc = yaqa.SecondMoment(n)
    xs = [rng.standard_normal((t, n)).astype(dtype) for t in (5, 0, 19, 1)]
    for x in xs:
        acc.add(x)
    X = np.concatenate([x.astype(np.float64) for x in xs])
    assert acc.count == X.shape[0] and acc.batches == 4 and acc.n == n
    assert rel(acc.sum(), X.T @ X) < tol(dtype)
    assert rel(acc.mean(), X.T @ X / X.shape[0]) < tol(dtype)


@pytest.mark.parametrize("layout", ["C", "F", "T", "strided"])
def test_layouts_give_the_same_bits(rng, layout):
    n = 23
    x = rng.standard_normal((41, n))
    if layout == "F":
        y = np.asfortranarray(x)
    elif layout == "T":
        y = np.ascontiguousarray(x.T).T  # column-major view, zero-copy path
    elif layout == "strided":
        big = np.zeros((82, 2 * n))
        big[::2, ::2] = x
        y = big[::2, ::2]
    else:
        y = np.ascontiguousarray(x)
    a, b = yaqa.SecondMoment(n), yaqa.SecondMoment(n)
    a.add(np.asfortranarray(x))
    b.add(y)
    assert np.array_equal(a.sum(), b.sum())


def test_torch_tensors_accepted(rng):
    torch = pytest.importorskip("torch")
    n = 19
    x = rng.standard_normal((30, n))
    a, b = yaqa.SecondMoment(n), yaqa.SecondMoment(n)
    a.add(x)
    b.add(torch.from_numpy(x))
    assert np.array_equal(a.sum(), b.sum())
    c = yaqa.SecondMoment(n)
    c.add(torch.from_numpy(np.asfortranarray(x)).float())
    assert rel(c.sum(), x.T @ x) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_matches_numpy(rng, dtype):
    n = 29
    acc = yaqa.Diagonal(n)
    x = rng.standard_normal((53, n)).astype(dtype)
    acc.add(x[:20])
    acc.add(x[20:])
    ref = (x.astype(np.float64) ** 2).sum(0)
    assert acc.sum().shape == (n,)
    assert rel(acc.sum(), ref) < tol(dtype)
    assert rel(acc.mean(), ref / 53) < tol(dtype)


def ref_sketch_b(pairs):
    n, m = pairs[0][0].shape[1], pairs[0][1].shape[1]
    hin, hout = np.zeros((n, n)), np.zeros((m, m))
    for x, g in pairs:
        G = g.T @ x
        hin += G.T @ G
        hout += G @ G.T
    return hin / len(pairs), hout / len(pairs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["automatic", "direct", "gram"])
def test_sketch_b_matches_numpy(rng, dtype, path):
    n, m, S, T = 21, 13, 6, 9
    x = rng.standard_normal((S, T, n)).astype(dtype)
    g = rng.standard_normal((S, T, m)).astype(dtype)
    acc = yaqa.SketchB(n, m, path=path)
    acc.add_sequences(x[:4], g[:4])
    acc.add_sequence(x[4], g[4])
    acc.add_sequence(np.asfortranarray(x[5]), np.asfortranarray(g[5]))
    hin, hout = ref_sketch_b([(x[s].astype(np.float64), g[s].astype(np.float64)) for s in range(S)])
    assert acc.count == S and acc.tokens == S * T
    assert rel(acc.h_in(), hin) < 10 * tol(dtype)
    assert rel(acc.h_out(), hout) < 10 * tol(dtype)


def ref_sketch_a(batches, passes):
    X = np.concatenate([x for x, _ in batches])
    G = np.concatenate([g for _, g in batches])
    N = X.shape[0]
    hin = X.T @ X / N
    hout = None
    for p in range(1, passes):
        if p % 2:
            w = ((X @ hin) * X).sum(1)
            hout = G.T @ (G * w[:, None]) / (N * (hin * hin).sum())
        else:
            w = ((G @ hout) * G).sum(1)
            hin = X.T @ (X * w[:, None]) / (N * (hout * hout).sum())
    return hin, hout


@pytest.mark.parametrize("dtype", DTYPES)
def test_sketch_a_matches_numpy(rng, dtype):
    n, m, passes = 17, 11, 4
    batches = [(rng.standard_normal((t, n)).astype(dtype), rng.standard_normal((t, m)).astype(dtype))
               for t in (7, 12, 3)]
    acc = yaqa.SketchA(n, m, passes)
    for p in range(passes):
        assert acc.current_pass == p and not acc.in_pass
        acc.begin_pass()
        for x, g in batches:
            acc.add(x, None if p == 0 else g)
        acc.end_pass()
    assert acc.done
    hin, hout = ref_sketch_a([(x.astype(np.float64), g.astype(np.float64)) for x, g in batches], passes)
    assert rel(acc.h_in(), hin) < 20 * tol(dtype)
    assert rel(acc.h_out(), hout) < 20 * tol(dtype)


def test_merge_equals_one_accumulator(rng):
    n, m = 15, 9
    x = rng.standard_normal((40, n))
    g = rng.standard_normal((40, m))
    one, a, b = yaqa.SecondMoment(n), yaqa.SecondMoment(n), yaqa.SecondMoment(n)
    one.add(x[:25]); one.add(x[25:])
    a.add(x[:25]); b.add(x[25:])
    a.merge(b)
    assert np.array_equal(a.sum(), one.sum()) and a.count == 40
    sa1, sa2, sa = yaqa.SketchA(n, m, 2), yaqa.SketchA(n, m, 2), yaqa.SketchA(n, m, 2)
    for p in range(2):
        for s in (sa, sa1, sa2):
            s.begin_pass()
        sa.add(x[:25], g[:25]); sa.add(x[25:], g[25:])
        sa1.add(x[:25], g[:25]); sa2.add(x[25:], g[25:])
        sa1.merge_pass(sa2)
        sa1.end_pass(); sa.end_pass()
        sa2 = pickle.loads(pickle.dumps(sa1))  # the next pass's worker starts from the same factors
    assert np.array_equal(sa1.h_out(), sa.h_out())


def test_pickle_round_trip_is_exact(rng):
    n, m = 14, 10
    x = rng.standard_normal((22, n))
    g = rng.standard_normal((22, m))
    sm = yaqa.SecondMoment(n, threads=1); sm.add(x)
    dg = yaqa.Diagonal(n); dg.add(x)
    sb = yaqa.SketchB(n, m, path="gram"); sb.add_sequence(x, g)
    for acc, get in ((sm, lambda a: a.sum()), (dg, lambda a: a.sum()), (sb, lambda a: a.h_out())):
        back = pickle.loads(pickle.dumps(acc))
        assert type(back) is type(acc)
        assert np.array_equal(get(back), get(acc))
        assert back.count == acc.count
    assert pickle.loads(pickle.dumps(sm)).threads == 1
    # Sketch A in every state: before any pass, inside a pass, between passes, done.
    sa = yaqa.SketchA(n, m, 3)
    states = [pickle.dumps(sa)]
    for p in range(3):
        sa.begin_pass()
        sa.add(x[:10], g[:10])
        mid = pickle.loads(pickle.dumps(sa))
        assert mid.in_pass and mid.current_pass == p and mid.pass_count == 10
        sa.add(x[10:], g[10:]); mid.add(x[10:], g[10:])
        sa.end_pass(); mid.end_pass()
        assert np.array_equal(mid.h_in(), sa.h_in())
        if p:
            assert np.array_equal(mid.h_out(), sa.h_out())
        states.append(pickle.dumps(sa))
    done = pickle.loads(states[-1])
    assert done.done and np.array_equal(done.h_out(), sa.h_out())
    assert not pickle.loads(states[0]).has_h_in


def test_corrupt_state_is_refused(rng):
    acc = yaqa.SecondMoment(5)
    acc.add(rng.standard_normal((3, 5)))
    n, prec, thr, data = acc.__getstate__()
    other = yaqa.SecondMoment.__new__(yaqa.SecondMoment)
    with pytest.raises(yaqa.InvalidArgument, match="expected"):
        other.__setstate__((n, prec, thr, data[:-3]))
    with pytest.raises(yaqa.InvalidArgument, match="second_moment"):
        other.__setstate__((6, prec, thr, data))


def test_returned_arrays_outlive_their_accumulator(rng):
    n = 31
    acc = yaqa.SecondMoment(n)
    x = rng.standard_normal((50, n))
    acc.add(x)
    s = acc.sum()
    ref = s.copy()
    r = weakref.ref(acc)
    del acc
    gc.collect()
    assert r() is None
    junk = [np.ones((n, n)) for _ in range(20)]  # reuse the freed memory, if it were freed
    assert np.array_equal(s, ref) and s.flags.owndata is False and s.base is not None
    del junk
    # A view of the input: the accumulator keeps no reference, the input can go away.
    acc2 = yaqa.SecondMoment(n)
    y = np.asfortranarray(x)
    acc2.add(y)
    del y, x
    gc.collect()
    assert np.allclose(acc2.sum(), ref)


def test_threads_do_not_change_the_bits(rng):
    n = 70
    x = rng.standard_normal((90, n))
    a, b = yaqa.SecondMoment(n, threads=1), yaqa.SecondMoment(n, threads=2)
    a.add(x); b.add(x)
    assert np.array_equal(a.sum(), b.sum())
