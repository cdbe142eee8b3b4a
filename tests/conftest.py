import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def gen():
    """A fresh seeded generator per use."""
    return lambda seed=0: torch.Generator().manual_seed(seed)
