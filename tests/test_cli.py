import json
import subprocess
import sys

import pytest

from interp.cli import main

INTERP = [sys.executable, "-m", "interp.cli"]


def test_train_info_eval_end_to_end(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--task", "modular", "--p", "5", "--steps", "40", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"]["p"] == 5 and config["train"]["steps"] == 40 and config["train"]["steps_done"] == 40
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 20  # eval every steps / 20
    assert main(["info", "--ckpt", str(out)]) == 0
    assert "modular(p=5" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--n", "64", "--out", str(tmp_path / "eval.json")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert max(map(len, printed)) <= 80 and not any("…" in line for line in printed)  # nothing cut to fit 80 columns
    rows = json.loads((tmp_path / "eval.json").read_text())
    assert {(r["split"], r["method"]) for r in rows} == {(s, m) for s in ("id", "ood") for m in ("model", "exact_mod_p")}


@pytest.mark.parametrize("task", ["linear", "polynomial", "kernel", "complex-zeros"])
def test_every_task_trains_from_the_cli(task, tmp_path):
    assert main(["train", "--task", task, "--steps", "4", "--d-model", "16", "--out", str(tmp_path / task)]) == 0
    assert main(["eval", "--ckpt", str(tmp_path / task), "--n", "16"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "--ckpt", "/nonexistent/model"], "no checkpoint folder"),
        (["train", "--task", "linear", "--p", "5", "--out", "x"], "--p does not apply to task linear"),
        (["train", "--task", "nope", "--out", "x"], "invalid choice"),
        (["train", "--task", "modular", "--p", "5", "--n-tasks", "25", "--out", "x"], "n_tasks"),
        (["train", "--task", "linear", "--d-model", "10", "--heads", "3", "--out", "x"], "divisible"),
        (["frobnicate"], "invalid choice"),
        (["train", "--task", "linear", "--threads", "0", "--out", "x"], "--threads must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path):
    proc = subprocess.run(INTERP + argv, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_corrupt_checkpoint_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--task", "linear", "--steps", "2", "--d-model", "16", "--out", str(out)]) == 0
    (out / "weights.safetensors").write_bytes(b"not a safetensors file")
    proc = subprocess.run(INTERP + ["info", "--ckpt", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "corrupt" in proc.stderr


def test_threads_flag_and_default(tmp_path, monkeypatch):
    """--threads sets torch's thread count (recorded on the card); the default is every core on an idle
    machine and 1 when /proc/loadavg shows another runnable process."""
    import torch

    import interp.cli as cli

    out = tmp_path / "m"
    assert main(["train", "--task", "linear", "--steps", "2", "--d-model", "16", "--threads", "1", "--out", str(out)]) == 0
    assert "1 torch thread(s)" in json.loads((out / "config.json").read_text())["train"]["hardware"]
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 4)
    for loadavg, expected in (("0.10 0.2 0.3 1/120 999", 4), ("0.10 0.2 0.3 2/120 999", 1), ("1.50 0.2 0.3 1/120 999", 1)):
        monkeypatch.setattr(cli, "Path", lambda p, text=loadavg: type("F", (), {"read_text": lambda self: text})())
        assert cli.default_threads() == expected, loadavg


def test_every_help_builds_without_torch():
    """``interp --help`` and every subcommand's ``--help`` answer at once: formatting them imports neither torch nor
    TransformerLens (bench/cli_startup.py times them), and the task names they list are interp.tasks.TASKS."""
    code = ("import sys\nfrom interp.parser import build_parser, subparsers, TASK_NAMES\n"
            "parser = build_parser()\nparser.format_help()\n"
            "for sub in subparsers(parser).values(): sub.format_help()\n"
            "print(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))\nprint(','.join(TASK_NAMES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    from interp.tasks import TASKS

    assert out[0] == "[]" and out[1].split(",") == sorted(TASKS)
