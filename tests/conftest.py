import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust on a shared machine


@pytest.fixture
def gen():
    """A fresh seeded generator per use."""
    return lambda seed=0: torch.Generator().manual_seed(seed)
