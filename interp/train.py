"""Training, top to bottom: config, schedule, curriculum, loss, evaluation, the loop, resume.

AdamW with linear warm-up and cosine decay, gradient clipping, an optional Garg-style curriculum, ID and
OOD evaluation every ``eval_every`` steps into metrics.jsonl, best-checkpoint keeping or early stopping on
the OOD metric (He et al.: the OOD phase is transient in deep models), and exact resume: the optimizer,
data generator and step are saved beside the weights every ``checkpoint_every`` steps.

Over 400 lines on purpose: nanoGPT's rule, one training loop read top to bottom.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as tensors_to_bytes
from torch import Tensor

from .checkpoint import CheckpointError, Checkpoint, read_config, read_metrics, read_tensors, save_checkpoint, load_weights
from .checkpoint import check_replaceable, folder_lock, is_checkpoint
from .checkpoint import SNAPSHOT_DTYPES, WEIGHTS, snapshot_file
from .evaluate import squared_error_over_d
from .progress import progress_bar
from .spec import Model, ModelSpec, is_linear_bias, to_device
from .tasks import Batch, RegressionTask, TaskBase, task_from_dict
from .validation import NON_NEGATIVE_INT, NON_NEGATIVE_REAL, POSITIVE_INT, POSITIVE_REAL, Interval, Options, Pairs, validate

class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last saved checkpoint (if any) is left as it was."""


RESUME_TENSORS, RESUME_STATE = "resume/state.safetensors", "resume/state.json"
LAST_WEIGHTS = "last.safetensors"  # with keep_best, the weights at the last step, beside the best ones


@dataclass(frozen=True)
class Curriculum:
    """Garg et al.: active dims and number of examples grow by a step every ``every`` training steps."""

    dims_start: int | None = None
    dims_step: int = 1
    points_start: int | None = None
    points_step: int = 2
    every: int = 2000

    def __post_init__(self) -> None:
        validate(self, {"dims_start": [None, *POSITIVE_INT], "dims_step": NON_NEGATIVE_INT,
                        "points_start": [None, *POSITIVE_INT], "points_step": NON_NEGATIVE_INT, "every": POSITIVE_INT})

    def n_examples(self, step: int, final: int) -> int:
        if self.points_start is None:
            return final
        return min(final, self.points_start + self.points_step * (step // self.every))

    def active_dims(self, step: int, final: int) -> int | None:
        if self.dims_start is None:
            return None
        return min(final, self.dims_start + self.dims_step * (step // self.every))


UNIT = [Interval(Real, 0, 1)]
# every field's type and range, checked once where a config is built (the API, the CLI, run configs, sweeps)
TRAIN_CONSTRAINTS = {
    "steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "n_examples": POSITIVE_INT, "lr": POSITIVE_REAL,
    "weight_decay": NON_NEGATIVE_REAL, "betas": [Pairs((Interval(Real, 0, 1, closed="left"),) * 2)],
    "warmup_steps": NON_NEGATIVE_INT, "min_lr_ratio": UNIT, "grad_clip": [None, *NON_NEGATIVE_REAL],
    "eval_every": POSITIVE_INT, "eval_size": POSITIVE_INT, "checkpoint_every": POSITIVE_INT, "keep_best": [bool],
    "patience": [None, *POSITIVE_INT], "seed": NON_NEGATIVE_INT, "device": [str], "snapshots": NON_NEGATIVE_INT,
    "snapshot_dtype": [Options(tuple(SNAPSHOT_DTYPES))], "decay_norms_and_biases": [bool], "warmup_start": UNIT, "balanced_batches": [bool],
    "resample_every": POSITIVE_INT, "layer_clip": NON_NEGATIVE_REAL,
    "layer_clip_after": [None, Pairs((NON_NEGATIVE_INT[0], NON_NEGATIVE_REAL[0]))], "init_from": [None, str],
}


def check_device(name: str) -> None:
    """``name`` must be "auto" or a device string torch reads ("cpu", "cuda", "cuda:1", "mps"); whether that
    device is present is checked when training starts (``pick_device``), so a config from a GPU machine loads."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"The 'device' parameter of TrainConfig must be 'auto' or a torch device such as 'cpu', "
                         f"'cuda' or 'cuda:0'. Got {name!r} instead.") from None


@dataclass(frozen=True)
class TrainConfig:
    """Everything the loop needs besides the task and the model spec."""

    steps: int = 2000
    batch_size: int = 64
    n_examples: int = 11
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0  # max gradient norm; 0 or None: no clipping (He et al.'s --clip=0.0)
    eval_every: int = 100
    eval_size: int = 512
    checkpoint_every: int = 500
    keep_best: bool = False  # final weights are those with the best OOD metric
    patience: int | None = None  # stop after this many evaluations without OOD improvement
    curriculum: Curriculum | None = None
    seed: int = 0
    device: str = "auto"
    snapshots: int = 20  # weight snapshots on a log-spaced step schedule (plus the best-OOD step); 0: none
    snapshot_dtype: str = "float32"  # float32 | float16 | bfloat16: the parameters' dtype in a snapshot file
    decay_norms_and_biases: bool = True  # False: He et al.'s groups, no weight decay on norms, biases, 1-D params
    warmup_start: float = 0.0  # warm-up from warmup_start·lr to lr (He et al.: 0.01); 0: lr·(step + 1)/warmup_steps
    balanced_batches: bool = False  # every pre-training task batch_size / n_tasks times, on the same pairs
    resample_every: int = 1  # a fresh training batch every this many steps (Cheng et al.: 10)
    layer_clip: float = 0.0  # Cheng et al.'s per-layer rule: block i's gradient norm clipped to layer_clip/(9 - i)²; 0: off
    layer_clip_after: tuple[int, float] | None = None  # (step, value): the rule's layer_clip from that step on
    # (their run-exp.ipynb: 1e-8, and 1e-7 after step 8,000)
    init_from: str | None = None  # a finished checkpoint of ours with this run's model and task: training starts
    # from its last-step weights, with a fresh optimizer and schedule (a longer run after a spent schedule); None: init

    def __post_init__(self) -> None:
        validate(self, TRAIN_CONSTRAINTS)
        if self.curriculum is not None and not isinstance(self.curriculum, Curriculum):
            raise ValueError(f"The 'curriculum' parameter of TrainConfig must be a Curriculum (a mapping in a config file) "
                             f"or None. Got {self.curriculum!r} instead.")
        check_device(self.device)
        if self.checkpoint_every % self.resample_every:
            raise ValueError(f"The 'checkpoint_every' parameter of TrainConfig must be a multiple of resample_every "
                             f"({self.resample_every}), so that a resumed run draws the batches an unbroken one does. "
                             f"Got {self.checkpoint_every!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if isinstance(d.get("curriculum"), dict):  # anything else is named by __post_init__
            d["curriculum"] = Curriculum(**d["curriculum"])
        for key in ("betas", "layer_clip_after"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present, else CPU, unless ``name`` says otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    device = torch.device(name)
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: hasattr(torch.backends, "mps") and torch.backends.mps.is_available()}.get(device.type)
    if available is None or not available():
        raise ValueError(f"device {name!r} is not available on this machine (use 'auto' or 'cpu')")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def hardware(device: torch.device) -> str:
    """What trained the model, for its card: the GPU's name, or the CPU and the torch threads used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} cores)"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``. The warm-up is
    lr·(step + 1)/warmup_steps, or with ``warmup_start`` s > 0 He et al.'s lr·(s + (1 - s)·step/warmup_steps),
    which is s·lr at step 0 and reaches lr at step warmup_steps."""
    if step < cfg.warmup_steps:
        if cfg.warmup_start == 0.0:  # the original schedule, kept exactly so earlier runs resume identically
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return cfg.lr * (cfg.warmup_start + (1 - cfg.warmup_start) * step / cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def loss_fn(out: Tensor, batch: Batch) -> Tensor:
    """Mean loss over the loss positions: MSE for [batch, pos, d_out] predictions, cross-entropy for logits."""
    mask = batch.loss_mask
    if batch.targets.is_floating_point():
        return F.mse_loss(out[mask], batch.targets[mask])
    return F.cross_entropy(out[mask], batch.targets[mask])


@torch.no_grad()
def score(model: Model, batch: Batch, error_scale: float | None = None) -> dict[str, float]:
    """loss plus ``error`` for regression: squared error / d (``interp.evaluate.squared_error_over_d``, d =
    ``error_scale``, the task's) averaged over the loss positions; or ``acc`` (exact match on the loss positions)
    for classification. Logs written before this definition hold the earlier pooled Σ error / Σ y² instead.

    For modular arithmetic (a batch with task parameters a, b) ``acc`` is averaged per task (a, b) and then over
    tasks, as He et al.'s code does, ``acc_last`` is the same over the last-shot region (the last quarter of the
    shots), and each kind of query has both too: ``acc_copyable``, ``acc_ratio``, ``acc_regression`` and their
    ``_last`` versions (``interp.query_kinds``), each only when the set holds a query of that kind there."""
    out = model(batch.inputs)
    result = {"loss": loss_fn(out, batch).item()}
    mask = batch.loss_mask
    if batch.targets.is_floating_point():
        if error_scale is None:
            raise ValueError("error_scale (the task's d of squared error / d) is needed to score a regression batch")
        result["error"] = squared_error_over_d(out[mask], batch.targets[mask], error_scale).mean().item()
    elif {"a", "b"} <= set(batch.params) and batch.examples is not None:
        from .query_kinds import classify_queries, correct_by_example, kind_metrics, task_ids

        p = out.shape[-1]  # the vocabulary is Z_p
        correct = correct_by_example(out.argmax(-1), batch.targets, mask)
        tasks, kinds = task_ids(batch.params, p).to(out.device), classify_queries(batch.examples.to(out.device), p)
        result |= kind_metrics(correct, tasks, kinds)
    else:
        result["acc"] = (out[mask].argmax(-1) == batch.targets[mask]).float().mean().item()
    return result


# The first one a record has is what keep-best watches: for modular runs with held-out pairs, regression-only
# accuracy on OOD tasks × held-out pairs (the queries no copy or ratio match answers; absent without such queries).
OBJECTIVE_KEYS = ("ood_test_acc_regression", "ood_error", "ood_test_acc", "ood_acc")


def objective_key(record: dict[str, Any]) -> str:
    """The OOD metric of a metrics record: OOD error, or OOD accuracy on held-out pairs when there are four splits."""
    return next(k for k in OBJECTIVE_KEYS if k in record)


def ood_objective(record: dict[str, Any]) -> float:
    """Lower is better: OOD error for regression, minus OOD accuracy for classification."""
    key = objective_key(record)
    return record[key] if key.endswith("error") else -record[key]


def eval_batches(task: TaskBase, cfg: TrainConfig, device: torch.device) -> dict[str, Batch]:
    """Fixed evaluation sets (``task.eval_splits()``: ID and OOD, or He et al.'s four), drawn from their own
    seed so every evaluation compares alike."""
    g = torch.Generator().manual_seed(cfg.seed + 10_000)
    return {split: t.sample(cfg.eval_size, cfg.n_examples, g).to(device)  # type: ignore[attr-defined]
            for split, t in task.eval_splits().items()}


def train_batch(task: TaskBase, cfg: TrainConfig, step: int, g: torch.Generator) -> Batch:
    """The training batch at ``step``, with the curriculum applied; with ``balanced_batches`` the task's
    ``sample_balanced`` (every task equally often, on the same pairs)."""
    n_examples = cfg.n_examples
    if cfg.curriculum is not None:
        n_examples = cfg.curriculum.n_examples(step, cfg.n_examples)
        if isinstance(task, RegressionTask) and hasattr(task, "active_dims"):
            task = task.replace(active_dims=cfg.curriculum.active_dims(step, task.d_x))
    if cfg.balanced_batches:
        if not hasattr(task, "sample_balanced"):
            raise ValueError(f"balanced_batches needs a task with a finite set of pre-training tasks; "
                             f"{task.name!r} has no sample_balanced")
        return task.sample_balanced(cfg.batch_size, n_examples, g)  # type: ignore[attr-defined]
    return task.sample(cfg.batch_size, n_examples, g)  # type: ignore[attr-defined]


def decays(name: str, param: Tensor) -> bool:
    """He et al.'s rule (scheduler.py, param_groups_weight_decay) in TransformerLens names: no weight decay on a
    parameter with ndim <= 1 (LN ``.w``/``.b``, ``b_O``, ``b_in``, ``b_out``, ``b_U``), a torch bias (name ending
    ``.bias``) or a TransformerLens bias (last name part ``b`` or ``b_*``, which catches the 2-D ``b_Q``, ``b_K``,
    ``b_V`` [n_heads, d_head] that ndim alone would miss). Everything else decays, embeddings included
    (their run_icl.sh has --dont_decay_embd=False)."""
    return not (param.ndim <= 1 or is_linear_bias(name) or name.rsplit(".", 1)[-1] == "b")


def make_optimizer(model: Model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: one group decayed by ``weight_decay``, or with
    ``decay_norms_and_biases=False`` He et al.'s two groups, [no decay (see ``decays``), decay]."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if cfg.decay_norms_and_biases:
        return torch.optim.AdamW([p for _, p in params], lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    groups = [{"params": [p for name, p in params if not decays(name, p)], "weight_decay": 0.0},
              {"params": [p for name, p in params if decays(name, p)], "weight_decay": cfg.weight_decay}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def layer_clip_at(step: int, cfg: TrainConfig) -> float:
    """The per-layer clipping constant at (0-based) ``step``: ``layer_clip``, or ``layer_clip_after``'s value once
    ``step`` is past its step (the official ``if t > 8000``)."""
    if cfg.layer_clip_after is not None and step > cfg.layer_clip_after[0]:
        return cfg.layer_clip_after[1]
    return cfg.layer_clip


def clip_per_layer(model: Model, clip: float) -> None:
    """Cheng et al.'s ``clip_and_step`` rule (run-exp.ipynb), in place: the gradient of block i (all its
    parameters together) is scaled down to norm ``clip``/(8 - i + 1)² when it is larger. Defined for up to 8 blocks."""
    if len(model.blocks) > 8:
        raise ValueError(f"layer_clip is Cheng et al.'s rule for up to 8 blocks; this model has {len(model.blocks)}")
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        if not grads:
            continue
        norm, cap = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])), clip / (8 - i + 1) ** 2
        if norm > cap:  # as theirs: grad.mul_(cap / norm), no epsilon (torch's clip_grad_norm_ adds 1e-6 to the norm)
            for g in grads:
                g.mul_(cap / norm)


def train_step(model: Model, optimizer: torch.optim.Optimizer, batch: Batch, lr: float, grad_clip: float | None,
               layer_clip: float = 0.0) -> Tensor:
    """One AdamW step on ``batch``, the gradient norm clipped to ``grad_clip`` unless it is 0 or None (a max
    norm of 0 would zero every gradient), and each block's to Cheng et al.'s ``layer_clip`` rule when it is
    set (``clip_per_layer``); returns the (detached) loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = loss_fn(model(batch.inputs), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if layer_clip:
        clip_per_layer(model, layer_clip)
    optimizer.step()
    return loss.detach()


def resume_files(model: Model, optimizer: torch.optim.Optimizer, g: torch.Generator, state: dict[str, Any]) -> dict[str, Any]:
    """The files that let a killed run continue exactly: latest weights, optimizer moments, data RNG, step."""
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng"] = g.get_state()
    return {RESUME_TENSORS: tensors_to_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}),
            RESUME_STATE: json.dumps(state).encode()}


def load_resume(path: Path, model: Model, optimizer: torch.optim.Optimizer, g: torch.Generator) -> dict[str, Any]:
    """Restore what ``resume_files`` saved; returns the loop state (step, best, ...)."""
    tensors = read_tensors(path / RESUME_TENSORS)
    load_weights(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, path / RESUME_TENSORS)
    opt = optimizer.state_dict()
    device = next(model.parameters()).device
    opt["state"] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt["state"].setdefault(int(idx), {})[name] = value.to(device) if name != "step" else value
    try:
        optimizer.load_state_dict(opt)
        g.set_state(tensors["rng"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / RESUME_TENSORS} does not match this run's optimizer ({str(e).splitlines()[0]}); "
                              "start afresh with --no-resume") from None
    try:
        state = json.loads((path / RESUME_STATE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / RESUME_STATE} is corrupt or truncated ({e}); start afresh with --no-resume") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / RESUME_STATE} is not a resume state (no step); start afresh with --no-resume")
    return state


def snapshot_steps(cfg: TrainConfig) -> list[int]:
    """The steps that keep a weight snapshot: ``cfg.snapshots`` log-spaced integers from 1 to ``cfg.steps`` (He et
    al.'s np.logspace(0, log10(steps), num, dtype=int)), deduplicated, sorted, the last step always among them."""
    if cfg.snapshots == 0:
        return []
    points = np.logspace(0, np.log10(cfg.steps), num=cfg.snapshots, dtype=int)
    points[-1] = cfg.steps  # the float power can land one below it
    return sorted({int(s) for s in points})


def snapshot_tensors(model: Model, dtype: str) -> dict[str, Tensor]:
    """A CPU copy of the model's state dict with the parameters in ``dtype``; buffers (masks, the IGNORE value,
    rotary tables) stay as they are, since -1e5 does not fit in float16."""
    params = {name for name, _ in model.named_parameters()}
    return {k: v.detach().to("cpu", SNAPSHOT_DTYPES[dtype] if k in params else v.dtype, copy=True)
            for k, v in model.state_dict().items()}


def with_new_defaults(saved: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """The saved config's model, task and train sections, with fields added to the code since it was saved
    filled in at their defaults (which leave training unchanged), so that an older unfinished run resumes; only the
    sections ``mine`` has."""
    out = {k: dict(saved.get(k) or {}) for k in mine}
    defaults = {"model": {f.name: f.default for f in dataclasses.fields(ModelSpec)},
                "train": {f.name: f.default for f in dataclasses.fields(TrainConfig)}}
    for section, fields in defaults.items():
        if section not in mine:
            continue
        for name, default in fields.items():
            if name not in out[section] and name in mine[section] and default is not dataclasses.MISSING:
                out[section][name] = json.loads(json.dumps(default))
    return out


def start_weights(path: Path, spec: ModelSpec, task: TaskBase) -> dict[str, Tensor]:
    """``train.init_from``'s weights: the last step of the finished checkpoint at ``path`` (last.safetensors where
    keep_best kept other weights, else weights.safetensors). Its model and task must be this run's, so that the
    held-out tasks and pairs stay held out; anything else raises CheckpointError naming init_from."""
    config = read_config(path)
    if (path / RESUME_STATE).is_file():
        raise CheckpointError(f"train.init_from: {path} holds an unfinished run; finish it first (its weights are not a last step)")
    mine = {"model": spec.to_dict(), "task": task.to_dict()}  # type: ignore[attr-defined]
    saved = with_new_defaults(config, mine)
    for section in mine:
        theirs, ours = saved[section], json.loads(json.dumps(mine[section]))
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if diff:
            raise CheckpointError(f"train.init_from: {path} has a different {section} ({section}.{diff[0]}: "
                                  f"{theirs.get(diff[0])!r} there, {ours.get(diff[0])!r} here)")
    last = path / LAST_WEIGHTS
    return read_tensors(last if last.is_file() else path / WEIGHTS)


def train(
    task: TaskBase,
    spec: ModelSpec,
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> Checkpoint:
    """Train ``spec`` on ``task``. With ``out``, checkpoint there: with ``resume`` continue the unfinished run
    of the same config it holds, and refuse a folder that holds anything else; without, start afresh over a
    checkpoint of ours there. Anything at ``out`` that is not a checkpoint of ours is never replaced, and the
    folder is locked for the whole run, so a second run into it is refused (``checkpoint.folder_lock``); both
    are checked, with the device and writability, before any work starts. ``stop_after`` ends the process after
    that many steps without saving, as a kill would (used to test resume)."""
    pick_device(cfg.device)  # an absent device fails here, before anything is built
    init = None if cfg.init_from is None else start_weights(Path(cfg.init_from), spec, task)
    if out is None:
        return train_loop(task, spec, cfg, None, resume, progress, stop_after, init)
    out = Path(out)
    with folder_lock(out):
        check_out(out, resume)
        return train_loop(task, spec, cfg, out, resume, progress, stop_after, init)


def check_out(out: Path, resume: bool) -> None:
    """Raise CheckpointError unless a run may write ``out``: nothing or an empty folder is there, or a
    checkpoint of ours (an unfinished one with ``resume``); only a checkpoint of ours is offered --no-resume."""
    check_replaceable(out)
    if resume and is_checkpoint(out) and not (out / RESUME_STATE).is_file():
        raise CheckpointError(f"{out} already exists and holds a finished checkpoint; choose another --out, "
                              "or replace it with --no-resume")


def train_loop(task: TaskBase, spec: ModelSpec, cfg: TrainConfig, out: Path | None, resume: bool, progress: bool,
               stop_after: int | None, init: dict[str, Tensor] | None = None) -> Checkpoint:
    """``train`` after its checks: the loop, top to bottom (``out``, when given, is locked by the caller;
    ``init``, when given, the starting weights ``start_weights`` read for ``cfg.init_from``)."""
    device = pick_device(cfg.device)
    model = to_device(spec.build(), device)
    optimizer = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    evals = eval_batches(task, cfg, device)
    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None, "since_best": 0, "wall_s": 0.0}
    metrics: list[dict[str, Any]] = []
    best_weights: dict[str, Tensor] | None = None
    if init is not None:  # a resume below overwrites these with the run's own latest weights
        load_weights(model, init, Path(str(cfg.init_from)))

    if out is not None and resume and (out / RESUME_STATE).is_file():
        saved = read_config(out)
        mine = {"model": spec.to_dict(), "task": task.to_dict(), "train": cfg.to_dict()}  # type: ignore[attr-defined]
        if json.loads(json.dumps(mine)) != with_new_defaults(saved, mine):
            raise CheckpointError(f"{out} holds an unfinished run with a different config; use another --out or delete it")
        state = load_resume(out, model, optimizer, g)
        metrics = read_metrics(out / "metrics.jsonl")
        if cfg.keep_best and state["best_step"] is not None:
            best_weights = read_tensors(out / "weights.safetensors")

    # Weight snapshots: state["snapshots"] lists every step that has one, in the folder or in ``pending`` (taken
    # since the last save, written by the next one, lost with it in a kill and taken again after the resume).
    snapshotting = out is not None and cfg.snapshots > 0
    scheduled = set(snapshot_steps(cfg))
    state.setdefault("snapshots", [])
    pending: dict[int, dict[str, Tensor]] = {}

    def take_snapshot(step: int) -> None:
        if snapshotting and step not in state["snapshots"]:
            pending[step] = snapshot_tensors(model, cfg.snapshot_dtype)
            state["snapshots"] = sorted([*state["snapshots"], step])

    def snapshot_save() -> tuple[dict[str, Any], dict[str, Any]]:
        """The snapshot part of a save: new files, and save_checkpoint's ``keep`` and ``snapshots`` arguments."""
        if not snapshotting:
            return {}, {}
        steps = state["snapshots"]
        entry = {"steps": steps, "dtype": cfg.snapshot_dtype,
                 "best_ood_step": state["best_step"] if state["best_step"] in steps else None,
                 "files": {str(s): snapshot_file(s) for s in steps}}
        keep = [snapshot_file(s) for s in steps if s not in pending]
        return {snapshot_file(s): t for s, t in pending.items()}, {"keep": keep, "snapshots": entry}

    def save_progress() -> None:
        """Checkpoint an unfinished run: config.json holds ``cfg`` unchanged (resume checks it), the weights
        file the best weights when keeping them (resume reads them back), resume/ the latest state."""
        weights_model = model
        if cfg.keep_best and best_weights is not None:
            weights_model = spec.build()
            weights_model.load_state_dict(best_weights)
        new, kwargs = snapshot_save()
        save_checkpoint(out, weights_model, spec, task, cfg.to_dict(), metrics,
                        resume_files(model, optimizer, g, state) | new, **kwargs)
        pending.clear()

    started = time.perf_counter() - state.get("wall_s", 0.0)  # training time survives a resume
    bar = progress_bar(total=cfg.steps, initial=state["step"], enabled=progress, desc=task.describe()[:40])  # type: ignore[attr-defined]
    batch: Batch | None = None
    while state["step"] < cfg.steps:
        step = state["step"]
        model.train()
        if step % cfg.resample_every == 0 or batch is None:
            batch = train_batch(task, cfg, step, g).to(device)
        loss = train_step(model, optimizer, batch, lr_at(step, cfg), cfg.grad_clip, layer_clip_at(step, cfg))
        state["step"] = step = step + 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            record: dict[str, Any] = {"step": step, "lr": lr_at(step - 1, cfg), "train_loss": loss.item()}
            if not math.isfinite(record["train_loss"]):
                bar.close()
                raise TrainingDiverged(f"training diverged by step {step} (loss {record['train_loss']}); "
                                       "lower the learning rate or use normalization")
            for split, eval_batch in evals.items():
                record |= {f"{split}_{k}": v for k, v in score(model, eval_batch, getattr(task, "error_scale", None)).items()}
            metrics.append(record)
            objective = ood_objective(record)
            if state["best"] is None or objective < state["best"]:
                superseded = state["best_step"]
                state |= {"best": objective, "best_step": step, "since_best": 0}
                if cfg.keep_best:
                    best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                take_snapshot(step)  # the best-OOD weights, kept or not
                if superseded is not None and superseded not in scheduled and superseded in state["snapshots"]:
                    state["snapshots"] = [s for s in state["snapshots"] if s != superseded]
                    pending.pop(superseded, None)
            else:
                state["since_best"] += 1
            key = objective_key(record)
            id_key = "id_" + key.split("_", 1)[1].replace("test_", "train_")
            postfix = {"loss": f"{record['train_loss']:.4g}", "id": f"{record.get(id_key, float('nan')):.3g}", "ood": f"{record[key]:.3g}"}
            bar.set_postfix(postfix, refresh=False)  # shown with the next (rate-limited) update
            if cfg.patience is not None and state["since_best"] >= cfg.patience:
                break
        if step in scheduled:
            take_snapshot(step)
        if stop_after is not None and step >= stop_after:
            bar.close()
            return Checkpoint(model.eval(), spec, task, cfg.to_dict(), metrics, out)
        if out is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            state["wall_s"] = time.perf_counter() - started
            save_progress()
    bar.close()
    take_snapshot(state["step"])  # the last step, also when stopped early
    last: dict[str, Any] = {}
    if cfg.keep_best and best_weights is not None:
        last = {LAST_WEIGHTS: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        model.load_state_dict(best_weights)
    train_info = cfg.to_dict() | {"best_step": state["best_step"], "steps_done": state["step"],
                                  "wall_s": round(time.perf_counter() - started, 2), "hardware": hardware(device)}
    if out is not None:
        new, kwargs = snapshot_save()
        save_checkpoint(out, model, spec, task, train_info, metrics, last | new, **kwargs)
    return Checkpoint(model.eval(), spec, task, train_info, metrics, out)
