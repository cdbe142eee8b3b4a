"""The CLI keeps its promise (issue 15, part 2): bad input gives one line on stderr and exit code 2, never a
traceback, and leaves the disk as it was: nothing half-written, nothing deleted that is not our checkpoint.

One table, ``ROWS``: each row builds what it needs under a temporary folder and returns the command line and
a piece of the expected message. Every row runs the CLI in-process (``interp.cli.main``) and checks the exit
code, the one line, the message, that no warning was raised, and that every file and folder under the
temporary folder is byte for byte and mode for mode as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

import interp
from interp.checkpoint import CheckpointError, folder_lock, is_checkpoint, load_checkpoint
from interp.cli import main
from interp.config import load_run
from interp.train import train

TINY_RUN = """task: {name: linear, d_x: 2}
model: {n_layers: 1, n_heads: 2, d_model: 8}
train: {steps: 4, n_examples: 3, eval_every: 2, eval_size: 8, batch_size: 8, checkpoint_every: 2, snapshots: 0}
"""
TRAIN = ["train", "--task", "linear", "--d", "2", "--steps", "2", "--layers", "1", "--d-model", "8", "--n-examples", "3"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A tiny finished checkpoint, trained once; rows that change it work on a copy."""
    run = load_run(write(tmp_path_factory.mktemp("run") / "run.yaml", TINY_RUN))
    out = tmp_path_factory.mktemp("zoo") / "m"
    train(run.task, run.spec, run.train, out=out, progress=False)
    return out


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def copy_ckpt(src: Path, dst: Path, edit_config: Callable[[dict], None] | None = None) -> Path:
    shutil.copytree(src, dst)
    if edit_config is not None:
        config = json.loads((dst / "config.json").read_text())
        edit_config(config)
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def nan_weights(src: Path, dst: Path) -> Path:
    copy_ckpt(src, dst)
    state = load_file(str(dst / "weights.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
              str(dst / "weights.safetensors"))
    return dst


def unfinished(tmp: Path, state_json: bytes) -> tuple[Path, Path]:
    """An unfinished run of TINY_RUN (saved at step 2, killed at 3) whose resume/state.json is ``state_json``."""
    config = write(tmp / "run.yaml", TINY_RUN)
    run = load_run(config)
    out = tmp / "m"
    train(run.task, run.spec, run.train, out=out, progress=False, stop_after=3)
    (out / "resume" / "state.json").write_bytes(state_json)
    return config, out


def shipped_sweep(tmp: Path) -> Path:
    """A sweep whose summary exists and lists a finished cell whose checkpoint is not here."""
    write(tmp / "s" / "sweep.json", json.dumps({"name": "s", "paths": "relative to this file",
                                                  "cells": [{"name": "a", "ckpt": "../runs/a", "status": "done"}]}))
    return write(tmp / "s.yaml", TINY_RUN + f"grid: {{train.seed: [0]}}\nruns: {tmp / 'runs'}\nsummary: {tmp / 's' / 'sweep.json'}\n")


def read_only(tmp: Path) -> Path:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return tmp / "ro" / "m"


def yaml_run(tmp: Path, text: str) -> str:
    return str(write(tmp / "run.yaml", text))


# (id, setup(tmp, ckpt) -> (argv, message)[, mark]); the "locked" row runs while another run holds the folder
ROWS: list[tuple] = [
    # data loss: only a checkpoint of ours is ever replaced, and two runs never write one folder
    ("no-resume over a foreign folder", lambda t, c: (
        [*TRAIN, "--no-resume", "--out", str(write(t / "out" / "thesis.tex", "mine").parent)], "not a checkpoint of this project")),
    ("no-resume over a file", lambda t, c: ([*TRAIN, "--no-resume", "--out", str(write(t / "notes.txt", "mine"))], "is a file")),
    ("resume into a foreign folder", lambda t, c: ([*TRAIN, "--out", str(write(t / "out" / "a.txt", "x").parent)], "not a checkpoint")),
    ("config run over a foreign folder", lambda t, c: (
        ["train", "--config", yaml_run(t, TINY_RUN), "--no-resume", "--out", str(write(t / "out" / "a.txt", "x").parent)],
        "not a checkpoint")),
    ("a finished checkpoint without --no-resume", lambda t, c: (
        [*TRAIN, "--out", str(copy_ckpt(c, t / "m"))], "already exists and holds a finished checkpoint")),
    ("a second run into a locked folder", lambda t, c: ([*TRAIN, "--no-resume", "--out", str(copy_ckpt(c, t / "m"))], "being written by another run")),
    # lost work: --out is checked before any work starts
    ("train --out under a file", lambda t, c: ([*TRAIN, "--out", str(write(t / "file", "x") / "m")], "is a file, not a folder")),
    ("train --out in a read-only folder", lambda t, c: ([*TRAIN, "--out", str(read_only(t))], "not writable"),
     pytest.mark.skipif(ROOT, reason="root writes into read-only folders")),
    ("eval --out at a folder", lambda t, c: (["eval", "--ckpt", str(c), "--n", "8", "--out", str(t)], "is a folder")),
    ("eval --out under a file", lambda t, c: (["eval", "--ckpt", str(c), "--out", str(write(t / "f", "x") / "e.json")], "is not a folder")),
    ("patch --out at a folder", lambda t, c: (["patch", "--ckpt", str(c), "--out", str(t)], "is a folder")),
    # types and ranges, checked once where the config is built
    ("yaml n_layers: two", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("n_layers: 1", "n_layers: two")),
                                          "--out", str(t / "m")], "'n_layers' parameter of ModelSpec")),
    ("yaml n_heads: -1", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("n_heads: 2", "n_heads: -1")),
                                        "--out", str(t / "m")], "'n_heads' parameter of ModelSpec")),
    ("yaml p: 1e9", lambda t, c: (["train", "--config", yaml_run(t, "task: {name: modular, p: 1e9}\n"), "--out", str(t / "m")],
                                  "'p' parameter of ModularTask must be an int")),
    ("yaml steps: -5", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("steps: 4", "steps: -5")),
                                      "--out", str(t / "m")], "'steps' parameter of TrainConfig")),
    ("yaml curriculum every: 0", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("snapshots: 0", "curriculum: {every: 0}")),
                                                "--out", str(t / "m")], "'every' parameter of Curriculum")),
    ("yaml init_from: another model", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("d_model: 8", "d_model: 16")
                                                      .replace("snapshots: 0", f"snapshots: 0, init_from: '{c}'")),
                                                      "--out", str(t / "m")], "init_from: ")),
    ("yaml init_from: no folder", lambda t, c: (["train", "--config", yaml_run(t, TINY_RUN.replace("snapshots: 0", f"snapshots: 0, init_from: '{t / 'nope'}'")),
                                                "--out", str(t / "m")], "no checkpoint folder")),
    ("yaml model: a list", lambda t, c: (["train", "--config", yaml_run(t, "task: {name: linear}\nmodel: [1, 2]\n"),
                                          "--out", str(t / "m")], "model section must be a mapping")),
    ("config.json n_examples: 1000", lambda t, c: (
        ["eval", "--ckpt", str(copy_ckpt(c, t / "m", lambda d: d["train"].update(n_examples=1000)))], "train.n_examples")),
    ("config.json n_layers: two", lambda t, c: (
        ["info", "--ckpt", str(copy_ckpt(c, t / "m", lambda d: d["model"].update(n_layers="two")))], "'n_layers' parameter")),
    ("--d-model 0", lambda t, c: ([*TRAIN, "--d-model", "0", "--out", str(t / "m")], "--d-model must be at least 1")),
    ("--heads 0", lambda t, c: ([*TRAIN, "--heads", "0", "--out", str(t / "m")], "--heads must be at least 1")),
    ("--checkpoint-every 0", lambda t, c: ([*TRAIN, "--checkpoint-every", "0", "--out", str(t / "m")], "--checkpoint-every must be at least 1")),
    ("--device nonsense", lambda t, c: ([*TRAIN, "--device", "nonsense", "--out", str(t / "m")], "'device' parameter")),
    ("--device cuda without a GPU", lambda t, c: ([*TRAIN, "--device", "cuda", "--out", str(t / "m")], "not available"),
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("patch --n 1", lambda t, c: (["patch", "--ckpt", str(c), "--n", "1"], "'n' parameter of PatchSettings must be an int >= 2")),
    # accepted silently before
    ("--layers 0", lambda t, c: ([*TRAIN, "--layers", "0", "--out", str(t / "m")], "--layers must be at least 1")),
    ("--layers -1", lambda t, c: ([*TRAIN, "--layers", "-1", "--out", str(t / "m")], "--layers must be at least 1")),
    ("--n-examples 0", lambda t, c: ([*TRAIN, "--n-examples", "0", "--out", str(t / "m")], "--n-examples must be at least 1")),
    ("--eval-every 0", lambda t, c: ([*TRAIN, "--eval-every", "0", "--out", str(t / "m")], "--eval-every must be at least 1")),
    ("--batch-size 0", lambda t, c: ([*TRAIN, "--batch-size", "0", "--out", str(t / "m")], "--batch-size must be at least 1")),
    ("non-prime p", lambda t, c: (["train", "--task", "modular", "--p", "9", "--out", str(t / "m")], "must be a prime")),
    ("--p 10000", lambda t, c: (["train", "--task", "modular", "--p", "10000", "--out", str(t / "m")], "'p' parameter of ModularTask")),
    ("all-NaN weights", lambda t, c: (["info", "--ckpt", str(nan_weights(c, t / "m"))], "NaN or infinite weights")),
    ("--port 0", lambda t, c: (["dashboard", "--port", "0"], "--port must be in")),
    # messages that name the file
    ("binary metrics.jsonl", lambda t, c: (
        ["info", "--ckpt", str(write(copy_ckpt(c, t / "m") / "metrics.jsonl", b"\xff\xfe\x00garbage").parent)],
        "metrics.jsonl is not a text file")),
    ("binary yaml", lambda t, c: (["train", "--config", str(write(t / "run.yaml", b"\xff\xfe\x00\x81")), "--out", str(t / "m")],
                                  "run.yaml")),
    ("truncated resume state", lambda t, c: (
        ["train", "--config", str((u := unfinished(t, b'{"step": 2, "best'))[0]), "--out", str(u[1])], "state.json is corrupt")),
    ("a shipped sweep summary", lambda t, c: (["sweep", str(shipped_sweep(t))], "shipped summary")),
    ("a sweep cell over a foreign folder", lambda t, c: (
        ["sweep", str(write(t / "s.yaml", TINY_RUN + f"grid: {{train.seed: [0]}}\nruns: {write(t / 'runs' / 'seed=0' / 'a.txt', 'x').parents[1]}\n"))],
        "not a checkpoint")),
]


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root``: its mode and, for a file, its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


@pytest.mark.parametrize("setup", [pytest.param(row[1], id=row[0], marks=row[2:]) for row in ROWS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(setup, request, tmp_path, ckpt_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, message = setup(tmp_path, ckpt_dir)
    capsys.readouterr()
    before = tree(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if "locked" in request.node.name:
            with folder_lock(Path(argv[-1])):  # another run holds the folder
                before = tree(tmp_path)  # with its lock file
                code, after = main(argv), tree(tmp_path)
        else:
            code, after = main(argv), tree(tmp_path)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert "--no-resume" not in lines[0] or is_checkpoint(Path(argv[-1]))  # only ever offered over our own checkpoint
    assert not [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
    if (tmp_path / "ro").exists():
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("call, name", [
    (lambda: interp.load(None), "'path'"),
    (lambda: interp.train("linear", n_heads=0, steps=1, progress=False), "'n_heads'"),
    (lambda: interp.train("linear", n_examples="11", steps=1, progress=False), "'n_examples'"),
    (lambda: interp.train(3, steps=1), "'task'"),
])
def test_the_api_raises_a_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_yaml_reads_1e_3_as_a_number(tmp_path):
    run = load_run(write(tmp_path / "run.yaml", TINY_RUN.replace("steps: 4", "steps: 4, lr: 1e-3, weight_decay: 1E-2")))
    assert run.train.lr == 0.001 and run.train.weight_decay == 0.01


def test_a_run_writes_with_the_umask_cleans_up_after_a_killed_save_and_ignores_a_stale_lock(tmp_path, ckpt_dir):
    """An empty folder is written into; modes follow the umask (not mkdtemp's 0700 or safetensors' 0600); a
    killed save's leftovers beside the folder (.old-*, .tmp-*) are removed; a lock file that no live process
    holds does not block, and is gone afterwards."""
    out = tmp_path / "m"
    out.mkdir()
    shutil.copytree(ckpt_dir, tmp_path / ".m.old-abc" / "ckpt")
    write(tmp_path / ".m.tmp-def" / "weights.safetensors", b"half")
    write(tmp_path / ".m.lock", "999999\n")
    old = os.umask(0o022)
    try:
        assert main([*TRAIN, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o644}


def test_a_save_killed_between_its_renames_is_put_back(tmp_path, ckpt_dir):
    """The kill fell after the old folder moved aside and before the new one moved in: the next run's lock
    puts the old version back, so the checkpoint is never lost."""
    shutil.copytree(ckpt_dir, tmp_path / ".m.old-abc" / "ckpt")
    with folder_lock(tmp_path / "m"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert load_checkpoint(tmp_path / "m").train["steps_done"] == 4


def test_the_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "m"):
            assert (tmp_path / ".m.lock").read_text().strip() == str(os.getpid())
            raise RuntimeError
    assert not (tmp_path / ".m.lock").exists()
    with folder_lock(tmp_path / "m"):  # a second writer in the same process is refused too
        with pytest.raises(CheckpointError, match="another run"):
            with folder_lock(tmp_path / "m"):
                pass


def test_a_run_into_a_folder_another_process_writes_is_refused(tmp_path, ckpt_dir, capsys):
    """The lock of another live process (flock on .m.lock, as a running `interp train` holds it) refuses the run
    and names that process; the checkpoint is left as it was."""
    out = copy_ckpt(ckpt_dir, tmp_path / "m")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
                               "time.sleep(60)", str(tmp_path / ".m.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(tmp_path)
        assert main([*TRAIN, "--no-resume", "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"being written by another run (pid {holder.pid})" in lines[0], lines
        assert tree(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    assert main([*TRAIN, "--no-resume", "--out", str(out)]) == 0  # a dead holder's lock does not block


@pytest.mark.parametrize("delay", [0.5, 1.0, 1.5])
def test_ctrl_c_during_import_is_one_line(tmp_path, delay):
    """``import interp`` is lazy, so the CLI's handler is in place before the heavy imports (a command's own). The
    exit code is 130 wherever the signal lands: torch's imports run Python source from C, and an interrupt there
    used to end the process by SIGINT (-2) after the message (seen in CI)."""
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "info", "--ckpt", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)  # importing takes several seconds: the signal lands in the imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == ["interp: interrupted"], err


def test_a_closed_stdout_ends_the_cli_quietly(ckpt_dir):
    """`interp info ... | head -1` closes the pipe before interp has written everything: no traceback (it used to
    print a BrokenPipeError traceback), and the exit code a shell tool killed by SIGPIPE gives, 141."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "info", "--ckpt", str(ckpt_dir)],
                            stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == "", err
