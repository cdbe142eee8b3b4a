"""Checkpoints: a folder of config.json + weights.safetensors + metrics.jsonl. Never pickle.

config.json carries the format version, the model spec, the task spec, the training config and the git
commit, so loading needs no other file. Saving writes a temporary sibling folder and renames it into
place, so a checkpoint on disk is always whole.

Weight snapshots along training live in ``snapshots/step-00001234.safetensors`` (the state dict, parameters
in the snapshot dtype), described by a top-level ``snapshots`` entry of config.json: ``{"steps": [...],
"dtype": "float32", "best_ood_step": N, "files": {"1234": "snapshots/step-00001234.safetensors"}}``.
A save carries the snapshot files it is told to ``keep`` over from the folder it replaces (hard links).

A save only ever replaces a folder that is a checkpoint of ours (or empty), never anything else. A run that
writes a folder holds ``folder_lock`` on it (a lock file beside it), so that two runs never write the same one.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

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


# what a save writes into a checkpoint folder (and so what a half-written temporary folder can hold)
SAVED_NAMES = {CONFIG, WEIGHTS, METRICS, "resume", "snapshots", "last.safetensors"}


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint folder of this project: its config.json reads as ours (``read_config``)."""
    try:
        read_config(path)
    except CheckpointError:
        return False
    return True


def check_replaceable(path: Path) -> None:
    """Raise CheckpointError unless a save may replace what is at ``path``: nothing, an empty folder, or a
    checkpoint of ours. Anything else (a file, a folder of other things) is never deleted."""
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link; refusing to replace it: give the folder it points to, "
                              "or choose another --out")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder; refusing to replace it: choose another --out")
    try:
        empty = not any(path.iterdir())
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if not empty and not is_checkpoint(path):
        raise CheckpointError(f"{path} exists and is not a checkpoint of this project (no valid {CONFIG}); "
                              "refusing to replace it: choose another --out")


def check_writable(path: Path) -> None:
    """Raise CheckpointError unless a checkpoint folder can be written at ``path``: its parent is (or can be
    made) a writable folder, and an existing ``path`` is writable too. Checked before any work starts."""
    parent = path.parent
    existing = next((p for p in [parent, *parent.parents] if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        raise CheckpointError(f"cannot write {path}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write {path}: {existing} is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write {path}: it is not writable")


_held_locks: dict[str, int] = {}  # folder -> the lock file's descriptor, for the locks this process holds


@contextlib.contextmanager
def folder_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the checkpoint folder ``path`` while the block runs: a lock file
    ``.<name>.lock`` beside it, locked with flock (released by the kernel when the process dies, so the lock of
    a killed run is never stale), holding the owner's pid, and removed on exit. Another run, in this process
    or another, raises CheckpointError at once. On entry, what a killed save left beside the folder is put
    right (``recover_stale``) and the folder is checked writable."""
    path = Path(path).absolute()
    key = str(path)
    if key in _held_locks:
        raise CheckpointError(f"{path} is being written by another run in this process; choose another --out")
    check_writable(path)
    if fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror} ({e.filename})") from None
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CheckpointError(f"cannot write {path}: {e.strerror} ({lock})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(f"{path} is being written by another run (pid {owner}); wait for it to end, "
                                  "or choose another --out") from None
        try:  # the holder we waited for may have removed the file: lock the one on disk
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_locks[key] = fd
        recover_stale(path)
        yield
    finally:
        _held_locks.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def recover_stale(path: Path) -> None:
    """Put right what a killed save left beside ``path`` (call it holding ``folder_lock``, so that no save is
    under way): the previous version in ``.<name>.old-*/ckpt`` goes back in place when ``path`` is missing (the
    kill fell between the two renames) and is deleted otherwise; a half-written ``.<name>.tmp-*`` folder is
    deleted. Only folders that hold nothing but a checkpoint's files are touched."""
    pattern = glob.escape(str(path.parent / f".{path.name}"))
    for old in sorted(Path(p) for p in glob.glob(pattern + ".old-*")):
        inner = old / "ckpt"
        if not old.is_dir() or set(os.listdir(old)) - {"ckpt"}:
            continue
        if inner.is_dir() and not os.path.lexists(path) and is_checkpoint(inner):
            os.rename(inner, path)
        if not inner.exists() or is_checkpoint(inner):
            shutil.rmtree(old, ignore_errors=True)
    for tmp in (Path(p) for p in glob.glob(pattern + ".tmp-*")):
        if tmp.is_dir() and not tmp.is_symlink() and set(os.listdir(tmp)) <= SAVED_NAMES:
            shutil.rmtree(tmp, ignore_errors=True)


def set_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the user's umask asks for (mkdtemp makes folders 0700,
    and safetensors writes files 0600)."""
    umask = current_umask()
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for names, mode in ((dirs, 0o777), (files, 0o666)):
            for name in names:
                with contextlib.suppress(OSError):  # a kept file hard-linked from another owner keeps its mode
                    os.chmod(os.path.join(root, name), mode & ~umask)


def write_folder_atomically(path: Path, files: dict[str, bytes | dict[str, torch.Tensor]], keep: Iterable[str] = ()) -> None:
    """Write ``files`` (bytes, or tensors for .safetensors) into a temp sibling of ``path``, then swap it in;
    ``keep`` names files of the folder being replaced to carry over unchanged (hard-linked, else copied). Only
    nothing, an empty folder or a checkpoint of ours is replaced (``check_replaceable``)."""
    path = Path(path)
    check_replaceable(path)
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
        set_modes(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / "ckpt")
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # what is left, the next folder_lock removes
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
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{cfg_path} cannot be read: {e.strerror}") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format_version {version!r}; this code reads version {FORMAT_VERSION}")
    for key in ("model", "task", "train"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{cfg_path} has no '{key}' section")
    return config


def init_chain(path: str | Path, root: str | Path = ".") -> list[Path]:
    """The runs behind the checkpoint at ``path``, first to last: each after the first started (train.init_from)
    from the last-step weights of the one before it. init_from paths are read as training reads them, from
    ``root`` (the folder training ran in)."""
    runs = [Path(path)]
    while start := read_config(runs[0])["train"].get("init_from"):
        runs.insert(0, Path(root) / start)
    return runs


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
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON lines ({e})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a text file (not UTF-8): it should hold one JSON record per line") from None
    if not all(isinstance(r, dict) for r in records):
        raise CheckpointError(f"{path} is not valid JSON lines: every line should be one JSON object")
    return records


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
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"The 'path' argument of load must be a checkpoint folder (a str or Path). Got {path!r} instead.")
    path = Path(path)
    config = read_config(path)
    try:
        spec = ModelSpec(**config["model"])
        task = task_from_dict(config["task"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} describes an invalid model or task ({e})") from None
    n_examples = config["train"].get("n_examples")  # what the probes draw sequences with (absent: a bare save)
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1
                                   or task.n_ctx(n_examples) > spec.n_ctx):  # type: ignore[attr-defined]
        raise CheckpointError(f"{path / CONFIG}: train.n_examples must be an int >= 1 that fits the model's context of "
                              f"{spec.n_ctx} positions. Got {n_examples!r} instead.")
    model = spec.build()
    source = path / WEIGHTS if step is None else snapshot_path(path, config, step)
    state = read_tensors(source)
    if step is not None:
        dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        state = {k: v.to(dtypes[k]) if k in dtypes else v for k, v in state.items()}
    load_weights(model, state, source)
    bad = next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise CheckpointError(f"{source} holds NaN or infinite weights (first: {bad}); the model cannot be used")
    model.eval()
    return Checkpoint(model, spec, task, config["train"], read_metrics(path / METRICS), path, config.get("git_commit"), step)
