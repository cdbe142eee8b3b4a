"""Read the model zoo: one sub-folder per model, each with config.json (+ metrics.jsonl, CARD.md).

Pure Python, no Streamlit import, so the dashboard's data layer can be tested on its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZOO_ENV = "ICL_INTERP_ZOO"
DEFAULT_ZOO = Path(__file__).resolve().parents[1] / "models"

# The ModelSpec fields worth a column in the zoo table; the rest stay in config.json.
SPEC_KEYS = ("n_layers", "n_heads", "d_model", "attn_only", "normalization", "scoring")
METRIC_KEYS = ("step", "train_loss", "id_error", "ood_error", "id_acc", "ood_acc")  # as interp.train logs them
SWEEP_FILE = "sweep.json"

# metrics.jsonl grows by one line per eval; reading its tail keeps a big log cheap.
_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class ModelEntry:
    """One model folder in the zoo; `error` is set when its config.json could not be read."""

    name: str
    path: Path
    task: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    last_metrics: dict[str, Any] | None = None
    card: str | None = None
    error: str | None = None


def zoo_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The zoo folder: `override`, else $ICL_INTERP_ZOO, else models/ at the repo root."""
    if override is not None:
        return Path(override)
    env = os.environ.get(ZOO_ENV)
    return Path(env) if env else DEFAULT_ZOO


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def last_metrics(path: Path) -> dict[str, Any] | None:
    """The last complete JSON object in a metrics.jsonl file, or None if there is none."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read().decode("utf-8", errors="replace")
    # Walk back from the end: a run still training may have left a half-written last line.
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return record
    return None


def read_model(folder: Path) -> ModelEntry:
    """Read one model folder (must contain config.json) into a ModelEntry; never raises on bad files."""
    card_path = folder / "CARD.md"
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"expected a JSON object, got {type(config).__name__}")
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return ModelEntry(name=folder.name, path=folder, card=card,
                          error=f"unreadable config.json: {exc}")
    task_name = _section(config, "task").get("name")
    model = _section(config, "model")
    try:
        metrics = last_metrics(folder / "metrics.jsonl")
    except OSError:
        metrics = None
    return ModelEntry(
        name=folder.name,
        path=folder,
        task=None if task_name is None else str(task_name),
        spec={k: model[k] for k in SPEC_KEYS if k in model},
        steps=_section(config, "train").get("steps"),
        last_metrics=metrics,
        card=card,
    )


def read_zoo(root: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """All models in the zoo folder, sorted by name; a missing folder is an empty zoo."""
    root = zoo_dir(root)
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
    return [read_model(p) for p in folders]


def score_keys(metrics: dict[str, Any]) -> list[str]:
    """The ID / OOD score keys of one metrics record (accuracies and errors, not losses), in logged order."""
    return [k for k, v in metrics.items() if k.startswith(("id_", "ood_")) and not k.endswith("loss")
            and isinstance(v, (int, float)) and not isinstance(v, bool)]


def read_sweeps(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The sweep summaries in the zoo folder: sub-folders with sweep.json and no config.json, sorted."""
    root = zoo_dir(root)
    if not root.is_dir():
        return []
    return sorted(p / SWEEP_FILE for p in root.iterdir()
                  if p.is_dir() and (p / SWEEP_FILE).is_file() and not (p / "config.json").is_file())


def zoo_rows(entries: list[ModelEntry]) -> list[dict[str, Any]]:
    """One flat dict per model, for a table: name, task, spec columns, steps, last metrics, status.

    Metric columns are the fixed METRIC_KEYS plus whatever ID / OOD scores a model logged (id_train_acc, ...)."""
    extra: list[str] = []
    for e in entries:
        extra += [k for k in score_keys(e.last_metrics or {}) if k not in METRIC_KEYS and k not in extra]
    rows = []
    for e in entries:
        row: dict[str, Any] = {"model": e.name, "task": e.task}
        row.update({k: e.spec.get(k) for k in SPEC_KEYS})
        row["steps"] = e.steps
        metrics = e.last_metrics or {}
        row.update({f"last {k}": metrics.get(k) for k in (*METRIC_KEYS, *extra)})
        row["status"] = f"⚠ {e.error}" if e.error else "ok"
        rows.append(row)
    return rows


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete JSON object in a metrics.jsonl file (a half-written last line is skipped); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sweep.json as a dict; ValueError naming the file when it is not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def sweep_rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per sweep cell: n_id, alpha, depth, seed, phase, status, OOD / ID accuracies, best step, and
    the OOD (held-out tasks and pairs) accuracy by kind of query in the last shots (``ood_regression_last``, ...).

    Missing keys give None, so a sweep still running (or written by an older `interp sweep`) still reads."""
    rows = []
    for cell in sweep.get("cells") or []:
        if not isinstance(cell, dict):
            continue
        params = cell.get("params") or {}
        final = cell.get("final") or {}
        best = cell.get("best") or {}
        row: dict[str, Any] = {
            "cell": cell.get("name"),
            "n_id": params.get("task.n_tasks"),
            "alpha": params.get("task.pair_fraction"),
            "depth": params.get("model.n_layers"),
            "seed": params.get("train.seed"),
            "status": cell.get("status"),
            "phase": cell.get("phase"),
            "ood_acc_last_shot": cell.get("ood_acc_last_shot"),
            "best_ood_step": cell.get("best_ood_step"),
        }
        row |= {f"final {k}": v for k, v in final.items()}
        row |= {f"best {k}": v for k, v in best.items()}
        # the OOD accuracy a phase diagram colours by: final test accuracy, else the last-shot one
        ood = final.get("ood_test_acc", final.get("ood_acc"))
        row["ood_acc"] = ood if ood is not None else cell.get("ood_acc_last_shot")
        # what names the phase: the checkpoint's accuracy by kind of query (last quarter of the shots, per task)
        kinds = cell.get("kinds") or {}
        for kind in ("copyable", "ratio", "regression"):
            row[f"ood_{kind}_last"] = kinds.get(f"ood_test_acc_{kind}_last")
        rows.append(row)
    return rows
