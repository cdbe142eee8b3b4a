"""scripts/cheng_cards.py: the margin a table row shows at a seed is over that seed's runner-up, paired only when
the cached paired margin is between the same two activations."""
import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # cheng_cards imports zoo_cards from beside it
spec = importlib.util.spec_from_file_location("cheng_cards", SCRIPTS / "cheng_cards.py")
cheng_cards = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cheng_cards)


def cells(mse: dict[str, float], seed: int = 2) -> list[dict]:
    return [{"sweep": "converged", "layers": 7, "kernel": "exp", "seed": seed, "activation": a, "mse": v}
            for a, v in mse.items()]


def test_a_margin_cached_over_a_former_runner_up_is_not_shown_as_paired():
    gaps = {"converged/7/exp/2": {"winner": "exp", "runner_up": "relu", "gap": 0.012, "gap_ci": 0.002}}
    before = cells({"exp": 0.139, "relu": 0.151})
    assert cheng_cards.lowest_at_seed(before, gaps) == "2: exp (0.012 ± 0.002 below relu)"
    after = cells({"exp": 0.139, "relu": 0.151, "softmax": 0.148})  # softmax trained later and is now second
    assert cheng_cards.lowest_at_seed(after, gaps) == "2: exp (0.009 below softmax, unpaired)"
    assert cheng_cards.lowest_at_seed(after, {}) == "2: exp"  # never paired: no margin, as before
