import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20)


def spd(rng, n, dtype=np.float64):
    a = rng.standard_normal((n, 2 * n + 3))
    return (a @ a.T / a.shape[1] + 0.1 * np.eye(n)).astype(dtype)
