"""Run configs: one YAML (or JSON) file holds the task, the model knobs and the training config of a run.

    name: linear-d5                      # optional: a label for cards and sweeps
    purpose: Garg et al.'s setting ...   # optional: one line for the model card
    task:  {name: linear, d_x: 5}        # interp.tasks.task_from_dict
    model: {n_layers: 3, n_heads: 4, d_model: 64}   # ModelSpec knobs; widths and n_ctx come from the task
    train: {steps: 8000, n_examples: 20, curriculum: {dims_start: 2, points_start: 5, every: 500}}

``interp train --config FILE --out DIR`` trains it; ``interp sweep`` expands a grid over such a file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .spec import ModelSpec
from .tasks import TaskBase, task_from_dict
from .train import TrainConfig

SECTIONS = ("task", "model", "train")
FINISHED_KEYS = ("best_step", "steps_done", "wall_s", "hardware", "weights", "steps_before")  # added when a run ends (weights: which step a shipped copy holds; steps_before: a run shipped with the one it started from)
DERIVED_MODEL_KEYS = ("n_ctx", "d_in", "d_out", "d_vocab")  # set from the task, never by hand


@dataclass(frozen=True)
class RunConfig:
    """A run: what to train on (task), what to train (spec) and how (train)."""

    task: TaskBase
    spec: ModelSpec
    train: TrainConfig
    name: str | None = None
    purpose: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The config file's content: model knobs without the task-derived widths."""
        model = {k: v for k, v in self.spec.to_dict().items() if k not in DERIVED_MODEL_KEYS}
        out = {"task": self.task.to_dict(), "model": model, "train": self.train.to_dict()}  # type: ignore[attr-defined]
        return ({"name": self.name} if self.name else {}) | ({"purpose": self.purpose} if self.purpose else {}) | out


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader, which also reads ``1e-3`` as a number: YAML 1.1, which PyYAML follows, wants a dot
    in a float (``1.0e-3``), so ``lr: 1e-3`` would be the string "1e-3"; YAML 1.2 and JSON read it as 0.001."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                             list("-+0123456789"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The parsed YAML/JSON mapping in ``path``; a missing or malformed file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists() else f"config file {path} is not a file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); a run config is YAML or JSON") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with task, model and train sections")
    return data


def run_from_dict(d: dict[str, Any], where: str = "config") -> RunConfig:
    """Build a RunConfig from a mapping; an unknown section or field raises ConfigError naming it."""
    unknown = set(d) - {*SECTIONS, "name", "purpose", "format_version", "git_commit", "snapshots"}  # a checkpoint's config.json is a run config too
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; expected task, model, train")
    if "task" not in d:
        raise ConfigError(f"{where}: no task section")
    for section in SECTIONS:
        if d.get(section) is not None and not isinstance(d[section], dict):
            raise ConfigError(f"{where}: the {section} section must be a mapping of fields, got {d[section]!r}")
    model, train_d = dict(d.get("model") or {}), dict(d.get("train") or {})
    try:
        task = task_from_dict(d["task"])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: task: {e}") from None
    for key in DERIVED_MODEL_KEYS:
        model.pop(key, None)
    for key in FINISHED_KEYS:  # written into a finished checkpoint's config.json
        train_d.pop(key, None)
    for section, given, cls in (("model", model, ModelSpec), ("train", train_d, TrainConfig)):
        bad = set(given) - {f.name for f in dataclasses.fields(cls)}
        if bad:
            raise ConfigError(f"{where}: unknown {section} field(s) {sorted(bad)}")
    try:
        cfg = TrainConfig.from_dict(train_d)
        spec = ModelSpec.for_task(task, cfg.n_examples, **model)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return RunConfig(task, spec, cfg, d.get("name"), d.get("purpose"))


def load_run(path: str | Path) -> RunConfig:
    """The run described by the YAML/JSON file at ``path``."""
    return run_from_dict(read_config_file(path), where=str(path))


def with_overrides(d: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``d`` with dotted keys set: ``{"task.n_tasks": 64, "model.n_layers": 2}``."""
    out = copy.deepcopy(d)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        if not parents or parents[0] not in SECTIONS:
            raise ConfigError(f"grid key {dotted!r} must start with task., model. or train.")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"grid key {dotted!r}: {key} is not a section")
        node[leaf] = value
    return out


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs train the same thing (name and purpose aside)."""
    strip = lambda r: json.loads(json.dumps({k: v for k, v in r.to_dict().items() if k in SECTIONS}))  # noqa: E731
    return strip(a) == strip(b)
