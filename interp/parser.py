"""The `interp` command line's argument parser: every subcommand and its flags (the probes' flags come from
their settings dataclasses, ``probes.settings``). Building it imports no torch, so that every ``--help``
answers at once (bench/cli_startup.py)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

# The task flags whose name is not the field they set; which flags a task takes is its class's ``cli_flags``.
FLAG_FIELDS = {"d": "d_x"}


# ``--task``'s choices: the names of ``interp.tasks.TASKS``, written out because importing interp.tasks imports
# torch (2 s), which ``interp train --help`` must not; tests/test_cli.py checks that the two agree.
TASK_NAMES = ("complex-zeros", "kernel", "linear", "modular", "polynomial")


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """{subcommand: its parser} of ``parser`` (``build_parser()``'s: every subcommand the CLI has)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def build_parser() -> Parser:
    parser = Parser(prog="interp", description="icl-interp: train and open up small ICL transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a model and save a checkpoint folder")
    t.add_argument("--config", type=Path, help="a run config (YAML/JSON: task, model, train sections); "
                   "then task, model and training flags are not allowed")
    t.add_argument("--task", choices=TASK_NAMES, metavar="TASK", help="one of %(choices)s")
    t.add_argument("--out", required=True, type=Path, help="checkpoint folder, e.g. models/<name>")
    g = t.add_argument_group("task")
    g.add_argument("--d", type=int, help="input dims (linear, kernel)")
    g.add_argument("--x-dist", choices=["normal", "uniform"])
    g.add_argument("--x-scale", type=float)
    g.add_argument("--w-scale", type=float)
    g.add_argument("--degrees", type=lambda s: tuple(int(v) for v in s.split(",")), help="e.g. 1,2,3 (polynomial)")
    g.add_argument("--basis", choices=["monomial", "chebyshev"])
    g.add_argument("--coef-scale", type=float)
    g.add_argument("--x-range", type=float)
    g.add_argument("--kernel", choices=["linear", "relu", "exp", "comb", "exp-unscaled"],
                   help="exp is exp(<u,v>/2) and comb exp on x[:2] plus linear on x[2:4], as Cheng et al.'s code; "
                        "exp-unscaled is exp(<u,v>)")
    g.add_argument("--layout", choices=["interleaved", "paired"], help="paired: Cheng et al.'s [x_i, y_i] tokens, then the query (kernel)")
    g.add_argument("--p", type=int, help="modulus (modular)")
    g.add_argument("--n-tasks", type=int, help="pre-training (a, b) tasks (modular)")
    g.add_argument("--split-seed", type=int)
    g.add_argument("--pair-fraction", type=float, help="share of (x, y) pairs seen in pre-training (modular)")
    g.add_argument("--degree", type=int, help="polynomial degree (complex-zeros)")
    g.add_argument("--root-radius", type=float)
    m = t.add_argument_group("model")
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=2)
    m.add_argument("--d-model", type=int, default=64)
    m.add_argument("--d-mlp", type=int)
    m.add_argument("--attn-only", action="store_true")
    m.add_argument("--norm", choices=["LN", "LNPre", "RMS", "none"], default="LN")
    m.add_argument("--pos", choices=["learned", "rotary", "none"], default="learned")
    m.add_argument("--scoring", default="softmax", help="softmax, relu, linear or exp, or one per head separated "
                   "by commas (e.g. exp,linear)")
    m.add_argument("--layer", choices=["standard", "cheng2024"], default="standard",
                   help="cheng2024: Cheng et al.'s restricted layer (needs --layout paired --attn-only --norm none "
                        "--pos none --mask context --d-model d+1)")
    m.add_argument("--mask", choices=["causal", "context"], default="causal",
                   help="context: bidirectional, the query masked as a key (Cheng et al.; needs --layout paired)")
    m.add_argument("--act-fn", default="gelu", choices=["gelu", "relu", "silu", "gelu_new"])
    r = t.add_argument_group("training")
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--n-examples", type=int, help="in-context examples per sequence")
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--weight-decay", type=float, default=0.01)
    r.add_argument("--warmup", type=int, help="warm-up steps (default: 5%% of steps)")
    r.add_argument("--eval-every", type=int, help="default: steps / 20")
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--curriculum", action="store_true", help="Garg-style: dims and examples grow during training")
    r.add_argument("--keep-best", action="store_true", help="keep the weights with the best OOD metric")
    r.add_argument("--patience", type=int, help="early stop after this many evaluations without OOD improvement")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, help="torch CPU threads (default: all cores on an idle machine, 1 when "
                   "another CPU job is running: two trainings with 2 threads each on 2 cores run several times slower)")
    r.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds an unfinished run")

    w = sub.add_parser("sweep", help="train a grid of runs (one checkpoint per cell) and write sweep.json")
    w.add_argument("config", type=Path, help="a sweep file: a run config (or base: FILE, with sections over it) plus grid, runs, summary")
    w.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    w.add_argument("--backend", choices=["local", "ray"], default="local")
    w.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    w.add_argument("--force", action="store_true", help="train again the cells a summary has finished elsewhere (runs not here) or failed; drop its rows not in the grid")
    w.add_argument("--cells", action="append", metavar="PATTERN", help="train only the cells whose names match this "
                   "shell-style pattern (repeatable; e.g. 'n_layers=7,*scoring=linear*'); the others keep their rows")
    w.add_argument("--retry-failed", action="store_true", help="train again the cells whose row in the summary "
                   "failed (by default they are kept, as a diverged run diverges again)")
    w.add_argument("--dry-run", action="store_true", help="print what would happen to each cell (train, resume, "
                   "skip, kept, not selected) and stop")

    from probes.settings import PROBE_SETTINGS, EvalSettings  # torch-free: the flags are the settings' fields

    e = sub.add_parser("eval", help="ID/OOD error against the number of examples, beside the baselines")
    e.add_argument("--ckpt", required=True, type=Path)
    e.add_argument("--step", type=int, help="load the weight snapshot of this training step")
    EvalSettings.add_flags(e)
    e.add_argument("--out", type=Path, help="write the table as JSON")

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("--ckpt", required=True, type=Path)
    i.add_argument("--step", type=int, help="load the weight snapshot of this training step")

    helps = {"patch": "exact activation patching (0 = corrupted run, 1 = clean run)",
             "attribute": "attention-head attribution",
             "mlp": "Fourier / PCA / circularity analysis of a modular model's MLP",
             "algorithms": "ratio matching vs modular regression maps over the (x, y) grid",
             "geometry": "circle-of-circles and even/odd geometry of one head's output",
             "saturation": "prediction, softmax and layer-norm statistics as inputs leave the training range",
             "probe": "linear probes from activations to a task quantity, with a shuffled control",
             "circuit": "edge scores (exact edge patching, EAP, EAP-IG), the top-k circuit and its faithfulness"}
    for name, settings in PROBE_SETTINGS.items():
        q = sub.add_parser(name, help=helps[name])
        q.add_argument("--ckpt", required=True, type=Path)
        q.add_argument("--step", type=int, help="load the weight snapshot of this training step")
        settings.add_flags(q)
        q.add_argument("--out", type=Path, help="write the Result as JSON (readable by the dashboard and Result.from_json)")
        if name == "saturation":
            q.add_argument("--compare", nargs="+", type=Path, metavar="CKPT",
                           help="other checkpoints trained on the same task (e.g. without LN): B+ and B- per variant")

    d = sub.add_parser("dashboard", help="serve the Streamlit dashboard")
    d.add_argument("--port", type=int, default=8501)
    return parser
