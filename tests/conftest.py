import pytest
import torch
from threadpoolctl import threadpool_limits

# Tiny models: one thread is as fast, and two spin against each other on a shared 2-core machine (10x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """The same for scikit-learn's BLAS (PCA, probes)."""
    with threadpool_limits(1):
        yield


@pytest.fixture
def gen():
    """A fresh seeded generator per use."""
    return lambda seed=0: torch.Generator().manual_seed(seed)
