"""Checkpoints: a folder of config.json + weights.safetensors + metrics.jsonl. Never pickle.

config.json carries the format version, the model spec, the task spec, the training config and the git
commit, so loading needs no other file. Saving writes a temporary sibling folder and renames it into
place, so a checkpoint on disk is always whole.

Weight snapshots along training live in ``snapshots/step-00001234.safetensors`` (the state dict, parameters
in the snapshot dtype), described by a top-level ``snapshots`` entry of config.json: ``{"steps": [...],
"dtype": "float32", "best_ood_step": N, "files": {"1234": "snapshots/step-00001234.safetensors"}}``.
A save carries the snapshot files it is told to ``keep`` over from the folder it replaces (hard links).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .spec import Model, ModelSpec
from .tasks import TaskBase, task_from_dict

FORMAT_VERSION = 1
CONFIG, WEIGHTS, METRICS = "config.json", "weights.safetensors", "metrics.jsonl"
SNAPSHOT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def snapshot_file(step: int) -> str:
    """The path of the snapshot at ``step`` inside a checkpoint folder."""
    return f"snapshots/step-{step:08d}.safetensors"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and everything that describes it."""

    model: Model
    spec: ModelSpec
    task: TaskBase
    train: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    git_commit: str | None = None
    step: int | None = None  # the snapshot the weights come from; None: the checkpoint's own weights


def git_commit() -> str | None:
    """The commit of the working tree this code runs from, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_folder_atomically(path: Path, files: dict[str, bytes | dict[str, torch.Tensor]], keep: Iterable[str] = ()) -> None:
    """Write ``files`` (bytes, or tensors for .safetensors) into a temp sibling of ``path``, then swap it in;
    ``keep`` names files of the folder being replaced to carry over unchanged (hard-linked, else copied)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, content in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                save_file({k: v.detach().cpu().contiguous() for k, v in content.items()}, str(target))
        for name in keep:
            if name in files:
                continue
            source, target = path / name, tmp / name
            if not source.is_file():
                raise CheckpointError(f"{source} is missing; it should be kept in the new checkpoint")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # a filesystem without hard links
                shutil.copy2(source, target)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / "ckpt")
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def config_dict(spec: ModelSpec, task: TaskBase, train: dict[str, Any], snapshots: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON content of config.json (``snapshots``: the description of the weight snapshots, if any)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "task": task.to_dict(),
        "train": train,
        "git_commit": git_commit(),
    } | ({"snapshots": snapshots} if snapshots is not None else {})


def metrics_bytes(metrics: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(m) + "\n" for m in metrics).encode()


def save_checkpoint(
    path: str | Path,
    model: Model,
    spec: ModelSpec,
    task: TaskBase,
    train: dict[str, Any],
    metrics: list[dict[str, Any]] | None = None,
    extra: dict[str, bytes | dict[str, torch.Tensor]] | None = None,
    *,
    snapshots: dict[str, Any] | None = None,
    keep: Iterable[str] = (),
) -> Path:
    """Save atomically; ``extra`` adds files (e.g. the resume state, new snapshots) to the same folder,
    ``keep`` carries files of the checkpoint it replaces over, ``snapshots`` goes into config.json."""
    files: dict[str, bytes | dict[str, torch.Tensor]] = {
        CONFIG: json.dumps(config_dict(spec, task, train, snapshots), indent=2).encode(),
        WEIGHTS: dict(model.state_dict()),
        METRICS: metrics_bytes(metrics or []),
        **(extra or {}),
    }
    write_folder_atomically(Path(path), files, keep)
    return Path(path)


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, validated for presence and format version."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}")
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a checkpoint: {CONFIG} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format_version {version!r}; this code reads version {FORMAT_VERSION}")
    for key in ("model", "task", "train"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{cfg_path} has no '{key}' section")
    return config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with a clean error when it is missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from None


def load_weights(model: Model, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``model`` strictly, naming the first missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{source} does not match the model in config.json: {what}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"{source} does not match config.json: {name} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of dicts (empty when absent)."""
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON lines ({e})") from None


def snapshot_path(path: Path, config: dict[str, Any], step: int) -> Path:
    """The file of the snapshot at ``step``; a step without one raises ValueError listing those there are."""
    snapshots = config.get("snapshots") or {}
    files = snapshots.get("files") or {}
    if isinstance(step, bool) or not isinstance(step, int) or str(step) not in files:
        available = ", ".join(str(s) for s in snapshots.get("steps", [])) or "none"
        raise ValueError(f"step {step!r} has no snapshot in {path}; available steps: {available}")
    return path / files[str(step)]


def load_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Rebuild the model from config.json and load its weights, or those of the snapshot at ``step`` (cast back
    to the model's dtype); raises CheckpointError on any bad input, ValueError for a step without a snapshot."""
    path = Path(path)
    config = read_config(path)
    try:
        spec = ModelSpec(**config["model"])
        task = task_from_dict(config["task"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} describes an invalid model or task ({e})") from None
    model = spec.build()
    source = path / WEIGHTS if step is None else snapshot_path(path, config, step)
    state = read_tensors(source)
    if step is not None:
        dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        state = {k: v.to(dtypes[k]) if k in dtypes else v for k, v in state.items()}
    load_weights(model, state, source)
    model.eval()
    return Checkpoint(model, spec, task, config["train"], read_metrics(path / METRICS), path, config.get("git_commit"), step)
