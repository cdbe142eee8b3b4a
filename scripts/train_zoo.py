"""Train the shipped model zoo (CPU scale) into models/<name> and write each model's CARD.md.

    python scripts/train_zoo.py [name ...]

Training refuses to overwrite a finished model: delete its folder to retrain it.
The zoo is small on purpose: every model trains in minutes on 2 CPU cores. Paper-scale models (He et al.'s
p = 29, d_model 512, 200k steps; Garg et al.'s 12-layer models) need a GPU and are not shipped.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from interp.evaluate import evaluate
from interp.spec import ModelSpec
from interp.tasks import KernelTask, LinearTask, ModularTask, PolynomialTask, TaskBase
from interp.train import TrainConfig, train

ZOO = Path(__file__).resolve().parents[1] / "models"

# name -> (task, n_examples, model knobs, training knobs, what the model is for)
ENTRIES: dict[str, tuple[TaskBase, int, dict, dict, str]] = {
    "linear-d5": (LinearTask(d_x=5), 11, dict(n_layers=2, n_heads=4, d_model=64), dict(steps=4000, lr=1e-3),
                  "Garg et al.'s linear regression at toy scale (d = 5, 11 examples); compare with least squares."),
    "linear-d5-noln": (LinearTask(d_x=5), 11, dict(n_layers=2, n_heads=4, d_model=64, normalization="none"),
                       dict(steps=3000, lr=1e-3),
                       "linear-d5 without layer norm, for the saturation comparison (Naim & Asher)."),
    "polynomial-123": (PolynomialTask(degrees=(1, 2, 3)), 16, dict(n_layers=2, n_heads=4, d_model=64),
                       dict(steps=3000, lr=1e-3),
                       "Monomial polynomials of degree 1-3 on [-1, 1]; OOD = coefficients x3 (boundary values)."),
    "kernel-exp-attn": (KernelTask(kernel="exp"), 14,
                        dict(n_layers=3, n_heads=1, d_model=32, attn_only=True, scoring="exp"),
                        dict(steps=2000, lr=1e-3),
                        "Cheng et al.'s setting: attention-only, exp scoring on exp-kernel GP data (functional GD). "
                        "Unlike the paper it keeps layer norm: without it exp scoring diverged in training here."),
    "modular-p7": (ModularTask(p=7, n_tasks=16), 10,
                   dict(n_layers=2, n_heads=4, d_model=64, act_fn="relu"),
                   dict(steps=4000, lr=3e-3, batch_size=128, weight_decay=0.1),
                   "He et al.'s modular arithmetic at CPU scale (p = 7, 16 of 49 tasks in pre-training)."),
}


def card(name: str, ckpt, purpose: str, table: list[dict]) -> str:
    """CARD.md text: what the model is, how it was trained, and how it scores (numbers from this run)."""
    cols = list(table[0])
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |" for r in table]
    last = ckpt.metrics[-1]
    return "\n".join([
        f"# {name}", "", purpose, "",
        f"- task: `{ckpt.task.describe()}`",
        f"- model: `{ckpt.spec.to_dict()}`",
        f"- training: {ckpt.train['steps_done']} steps, best OOD at step {ckpt.train['best_step']}, "
        f"command: `python scripts/train_zoo.py {name}` (CPU)",
        f"- last evaluation: `{ {k: round(v, 4) for k, v in last.items() if isinstance(v, float)} }`",
        "", "## Evaluation (`interp eval`, 512 sequences per split)", "", *rows, "",
    ])


def main(names: list[str]) -> None:
    torch.set_num_threads(1)  # tiny models: one thread is as fast and leaves a core free
    for name in names or list(ENTRIES):
        task, n_examples, knobs, train_knobs, purpose = ENTRIES[name]
        spec = ModelSpec.for_task(task, n_examples, **knobs)
        cfg = TrainConfig(n_examples=n_examples, eval_every=250, checkpoint_every=1000, **train_knobs)
        ckpt = train(task, spec, cfg, out=ZOO / name, progress=False)
        table = evaluate(ckpt.model, task, n_examples, n_batches=2, batch_size=256).to_table()
        (ZOO / name / "CARD.md").write_text(card(name, ckpt, purpose, table))
        print(f"{name}: {ckpt.metrics[-1]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
