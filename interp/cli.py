"""`interp`: train, evaluate and inspect checkpoints from the shell.

Bad input (unknown flags, a flag that does not apply to the task, a field of the wrong type or range, a
missing or corrupt checkpoint, an --out that cannot be written or holds something that is not our checkpoint)
prints one line on stderr and exits with code 2, before any work starts; nothing on disk is changed.

The argument parser is ``interp.parser``; this module runs the commands.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .errors import CheckpointError

from .parser import FLAG_FIELDS, Parser, UsageError, build_parser  # noqa: F401  (tests and bench use them from here)


def make_task(args: argparse.Namespace):
    """The task named by --task, with every given task flag applied; a flag the task lacks is an error."""
    from .tasks import TASKS

    cls = TASKS[args.task]
    kwargs: dict[str, Any] = {}
    for flag in dict.fromkeys(f for task in TASKS.values() for f in task.cli_flags):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in cls.cli_flags:
            raise UsageError(f"--{flag.replace('_', '-')} does not apply to task {args.task}")
        kwargs[FLAG_FIELDS.get(flag, flag)] = value
    return cls(**kwargs)


def default_threads() -> int:
    """All cores when nothing else is running, else 1. "Running" is read from /proc/loadavg's runnable count
    (now, excluding this process) and the 1-minute load average (which lags, but sees a job that just slept)."""
    cores = os.cpu_count() or 1
    try:
        fields = Path("/proc/loadavg").read_text().split()
        others = int(fields[3].split("/")[0]) - 1
        load = float(fields[0])
    except (OSError, ValueError, IndexError):
        others, load = 0, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores if others <= 0 and load < 0.5 else 1


def set_threads(requested: int | None) -> int:
    """Set torch's CPU thread count from --threads (checked) or ``default_threads``; returns it."""
    if requested is not None and requested < 1:
        raise UsageError(f"--threads must be at least 1, got {requested}")
    import torch

    threads = requested or default_threads()
    torch.set_num_threads(threads)
    return threads


def train_from_config(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> int:
    """interp train --config FILE --out DIR: the file is the whole run; only --device and --no-resume apply."""
    from .config import load_run
    from .train import train

    allowed = {"command", "config", "out", "device", "no_resume", "threads"}
    given = [k for k, v in vars(args).items() if k not in allowed and v != parser_defaults.get(k)]
    if given:
        raise UsageError(f"--config holds the whole run; drop --{given[0].replace('_', '-')} or edit the config file")
    run = load_run(args.config)
    check_out_folder(args.out)
    set_threads(args.threads)
    cfg = dataclasses.replace(run.train, device=args.device) if args.device != "auto" else run.train
    ckpt = train(run.task, run.spec, cfg, out=args.out, resume=not args.no_resume)
    print_saved(args.out, ckpt)
    return 0


def check_out_folder(out: Path) -> None:
    """--out of train, before any work: writable, and nothing there that a save may not replace."""
    from .checkpoint import check_replaceable, check_writable

    check_writable(out)
    check_replaceable(out)


def check_out_file(out: Path | None) -> None:
    """--out of eval and the probes (a JSON file), before any work: not a folder, in a writable folder."""
    if out is None:
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name, e.g. {out / 'result.json'}")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is not a folder" + ("" if parent.exists() else " (it does not exist)"))
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out} is not writable")


def print_saved(out: Path, ckpt) -> None:
    last = ckpt.metrics[-1] if ckpt.metrics else {}
    summary = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k.startswith(("id_", "ood_")))
    print(f"saved {out} after {last.get('step', 0)} steps: {summary}")


def cmd_train(args: argparse.Namespace) -> int:
    if args.config is not None:
        return train_from_config(args, vars(build_parser().parse_args(["train", "--out", str(args.out)])))
    if args.task is None:
        raise UsageError("interp train needs --task or --config")
    task = make_task(args)  # before the heavy imports, so a bad flag fails fast
    n_examples = args.n_examples if args.n_examples is not None else task.default_examples
    for flag in ("steps", "n_examples", "eval_every", "layers", "heads", "d_model", "batch_size", "checkpoint_every"):
        value = n_examples if flag == "n_examples" else getattr(args, flag)
        if value is not None and value < 1:  # the configs check again; here the message names the flag
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    check_out_folder(args.out)
    from .spec import ModelSpec
    from .train import Curriculum, TrainConfig, train

    set_threads(args.threads)
    spec = ModelSpec.for_task(
        task, n_examples, n_layers=args.layers, n_heads=args.heads, d_model=args.d_model, d_mlp=args.d_mlp,
        attn_only=args.attn_only, normalization=args.norm, positional=args.pos, scoring=args.scoring,
        mask=args.mask, act_fn=args.act_fn, seed=args.seed, layer=args.layer,
    )
    curriculum = None
    if args.curriculum:
        d_x = getattr(task, "d_x", 1)
        every = max(1, args.steps // 20)
        curriculum = Curriculum(dims_start=min(5, d_x) if hasattr(task, "active_dims") else None,
                                points_start=min(n_examples, max(2, n_examples // 3)), every=every)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, n_examples=n_examples, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup if args.warmup is not None else max(1, args.steps // 20),
        eval_every=args.eval_every if args.eval_every is not None else max(1, args.steps // 20),
        checkpoint_every=args.checkpoint_every,
        keep_best=args.keep_best, patience=args.patience, curriculum=curriculum, seed=args.seed, device=args.device,
    )
    ckpt = train(task, spec, cfg, out=args.out, resume=not args.no_resume)
    print_saved(args.out, ckpt)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from collections import Counter

    from .sweep import check_sweep, load_sweep, plan, run_sweep

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    sweep = load_sweep(args.config)  # every cell's config is checked before anything trains
    check_sweep(sweep, args.force)
    actions = plan(sweep, args.force, args.retry_failed, args.cells)  # names a --cells pattern that matches nothing
    count = Counter(actions.values())
    n = count["train"] + count["resume"] + count["skip"]
    notes = [f"{count['kept: finished elsewhere']} finished elsewhere, kept from {sweep.summary}"] if count["kept: finished elsewhere"] else []
    notes += [f"{count['kept: failed']} failed, kept (--retry-failed trains them again)"] if count["kept: failed"] else []
    notes += [f"{count['not selected']} not selected by --cells"] if args.cells else []
    print(f"sweep {sweep.name}: {n} cells into {sweep.runs} ({args.backend})" + "".join(f"; {x}" for x in notes),
          flush=True)
    if args.dry_run:
        width = max(map(len, actions.values()))
        for name, action in actions.items():
            print(f"  {action:<{width}}  {name}")
        print(f"dry run: nothing trained, {sweep.summary} not written")
        return 0
    outcomes: dict[str, str] = {}

    def report(cell, outcome: str) -> None:
        outcomes[cell.name] = outcome
        print(f"[{len(outcomes)}/{n}] {cell.name}: {outcome}", flush=True)

    run_sweep(args.config, args.workers, args.backend, args.address, force=args.force,
              retry_failed=args.retry_failed, cells=args.cells, on_done=report)
    failed = [name for name, outcome in outcomes.items() if outcome.startswith("failed")]
    print(f"wrote {sweep.summary}" + (f"; {len(failed)} cell(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, read_config

    ckpt = load_checkpoint(args.ckpt, args.step)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    print(f"checkpoint  {ckpt.path}")
    print(f"task        {ckpt.task.describe()}")
    print(f"model       {type(ckpt.model).__name__}, {n_params:,} parameters")
    for k, v in ckpt.spec.to_dict().items():
        print(f"  {k:<14}{v}")
    t = ckpt.train
    if "steps_before" in t:  # a chain of runs shipped as one history (scripts/modular_cards.py): steps count from the first's start
        print(f"training    {t.get('steps_done', '?')} steps: {t['steps_before']} up to the end of {t.get('init_from')} "
              f"(train.init_from), then {t.get('steps')} from its last-step weights; best OOD at step {t.get('best_step')}")
    else:
        print(f"training    {t.get('steps_done', '?')} of {t.get('steps')} steps, best OOD at step {t.get('best_step')}")
        if t.get("init_from"):
            print(f"started at  the last-step weights of {t['init_from']} (train.init_from; steps count from there)")
    print(f"git commit  {ckpt.git_commit or 'unknown'}")
    snapshots = read_config(args.ckpt).get("snapshots")
    if snapshots:
        print(f"snapshots   {snapshots['dtype']} at steps {', '.join(map(str, snapshots['steps']))}"
              + (f" (loaded: step {ckpt.step})" if ckpt.step is not None else ""))
    if ckpt.metrics:
        print("last eval   " + json.dumps(ckpt.metrics[-1]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import api
    from probes.settings import EvalSettings

    from .checkpoint import load_checkpoint
    from .evaluate import spread
    from .report import WIDTH, fits_width

    settings = EvalSettings.from_args(args)
    check_out_file(args.out)
    ckpt = load_checkpoint(args.ckpt, args.step)
    result = api.evaluate(ckpt, settings, progress=True)
    rows = result.to_table(ci=True)  # --out writes these in full
    console = Console(width=WIDTH)
    console.print(f"{args.ckpt}: {ckpt.task.describe()}\n{result.label} by number of examples k, mean ± 95% CI over "
                  f"{result.n_sequences} sequences; avg = over every k (--out writes more k)")
    for count in (5, 4, 3, 2):  # as many k as 80 columns hold without cutting a number
        at = spread(result.curves[0].shots, count)
        shown = result.to_table(at=at, ci=True)
        body = [[row["method"], *(f"{row[f'k={k}']:.2g}±{row[f'k={k} ci95']:.1g}" for k in at), f"{row['avg']:.3g}"]
                for row in shown]
        header = ["method", *(f"k={k}" for k in at), "avg"]
        if fits_width(header, body):
            break
    for split in dict.fromkeys(r["split"] for r in rows):
        table = Table(title=split)
        for col in header:
            table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
        for row, cells in zip(shown, body):
            if row["split"] == split:
                table.add_row(*cells)
        console.print(table)
    kind_rows = result.kind_table(at=spread(result.by_kind[0].shots, 4) if result.by_kind else None)  # modular tasks: the model by kind of query, averaged per task
    if kind_rows:
        region = result.by_kind[0].last_shots
        table = Table(title="the model's accuracy by kind of query, averaged per task (a, b) then over tasks; "
                            f"all = all shots, last = shots {region[0]}-{region[-1]}, n = its queries; nan: no such query")
        shown = [c for c in kind_rows[0] if c != "method"]  # all rows are the model's
        header = {"all shots": "all", "n last": "n"}  # short, so that 80 columns hold the table
        for col in shown:
            table.add_column(header.get(col, col), no_wrap=True)
        for row in kind_rows:
            table.add_row(*(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in shown))
        console.print(table)
    if args.out:
        write_json_atomically(args.out, rows + kind_rows)  # the by-kind rows carry a "kind"
    return 0


def check_ckpt_layer(args: argparse.Namespace, ckpt) -> None:
    """--layer must exist in the model: one line naming the range otherwise."""
    n_layers = ckpt.spec.n_layers
    if getattr(args, "layer", None) is not None and not 0 <= args.layer < n_layers:
        raise UsageError(f"--layer {args.layer} does not exist: {args.ckpt} has {n_layers} layers (0-{n_layers - 1})")


def cmd_probe(args: argparse.Namespace) -> int:
    """patch | attribute | mlp | algorithms | geometry | saturation | probe: run, print, optionally write JSON."""
    from . import api
    from .checkpoint import load_checkpoint
    from probes.settings import PROBE_SETTINGS

    from .report import print_result

    settings = PROBE_SETTINGS[args.command].from_args(args)  # every flag checked before any work
    check_out_file(args.out)
    ckpt = load_checkpoint(args.ckpt, args.step)
    check_ckpt_layer(args, ckpt)
    if args.command == "saturation" and args.compare:
        run = lambda: api.compare_saturation({str(path): load_checkpoint(path) for path in [args.ckpt, *args.compare]},
                                             settings, progress=True)
    elif args.command == "probe":
        if settings.target is None:
            raise UsageError("interp probe needs --target (e.g. w, w_ls, coefs, a, b, task_vector, ax)")
        run = lambda: api.probe(ckpt, settings=settings)
    else:
        fn = getattr(api, args.command)  # a bar for the probes that take one (the long ones)
        run = lambda: fn(ckpt, settings, **({"progress": True} if "progress" in inspect.signature(fn).parameters else {}))
    result = run()
    several = hasattr(result, "results")  # a typed container of Results (interp mlp's MLPAnalysis)
    results = result.results() if several else {args.command: result}
    for name, r in results.items():
        print_result(r, title=f"{args.command} {name}" if several else None)
    if args.out:
        write_json_atomically(args.out, {k: v.to_dict() for k, v in results.items()} if several else result.to_dict())
    return 0


def write_json_atomically(path: Path, payload: Any) -> None:
    """Write JSON to a temporary sibling, then rename: no half-written file on disk."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_dashboard(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be in [1, 65535], got {args.port}")
    app = Path(__file__).resolve().parents[1] / "app" / "dashboard.py"
    if not app.is_file():
        raise UsageError(f"the dashboard is not installed beside this package ({app} is missing)")
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
                            "--browser.gatherUsageStats", "false"])


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "eval": cmd_eval, "info": cmd_info, "dashboard": cmd_dashboard,
            **{name: cmd_probe for name in ("patch", "attribute", "mlp", "algorithms", "geometry", "saturation", "probe",
                                            "circuit")}}


class _Interrupts:
    """Ctrl-C while `main` runs: remembered, then raised as KeyboardInterrupt. Some imports turn the interrupt
    into another error (transformers' lazy modules report a ModuleNotFoundError, a C extension's init an
    ImportError); the flag still tells `main` that the user pressed Ctrl-C."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `interp` console script; returns the exit code."""
    import signal
    import threading

    _Interrupts.seen = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _Interrupts.handler)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, CheckpointError, ValueError) as e:
        if _Interrupts.seen:
            return _interrupted()
        print(f"interp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        if _Interrupts.seen:
            return _interrupted()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted() -> int:
    print("interp: interrupted", file=sys.stderr)
    return 130


def entry() -> NoReturn:
    """The console script: `main`, then exit. A closed stdout (a pipe into `head`) ends it quietly. After Ctrl-C it leaves through ``os._exit(130)``: CPython kills itself
    with SIGINT at shutdown when the interrupt landed in C code that runs Python source (torch's imports do),
    even though `main` caught it, and the caller would see -2 instead of 130."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader closed stdout early (`interp info ... | head`): stop quietly, as `head`'s callers expect
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would raise again
        os._exit(141)  # 128 + SIGPIPE, what a shell tool killed by the closed pipe returns
    if code == 130:
        sys.stderr.flush()  # stdout was flushed above
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    entry()
