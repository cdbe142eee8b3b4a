"""Progress of long work: a bar on a terminal, rate-limited plain lines in a log (issue 15)."""
import io
import shutil

import torch

from interp.cli import main
from interp.evaluate import evaluate
from interp.progress import progress_bar
from interp.spec import ModelSpec
from interp.tasks import LinearTask
from probes.saturation import compare_boundaries, saturation


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_at_most_one_per_interval():
    log = io.StringIO()
    for _ in progress_bar(range(10_000), desc="work", file=log, interval=60):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and log.getvalue().endswith("\n")
    assert len(lines) == 2 and lines[0].startswith("work: 0/10000") and lines[1].startswith("work: 10000/10000")
    every = io.StringIO()
    bar = progress_bar(total=5, desc="work", file=every, interval=0)  # no limit: a line per update
    for i in range(5):
        bar.set_postfix({"i": i}, refresh=False)
        bar.update(1)
    bar.close()
    lines = every.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == [f"{n}/5" for n in range(6)] and "i=4" in lines[-1]


def test_a_terminal_gets_a_bar_and_disabled_is_silent():
    tty = Terminal()
    for _ in progress_bar(range(3), desc="work", file=tty):
        pass
    assert "\r" in tty.getvalue() and "|" in tty.getvalue()  # redrawn in place, with the bar
    quiet = io.StringIO()
    for _ in progress_bar(range(3), desc="work", file=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""


def test_eval_and_saturation_report_progress_when_stderr_is_not_a_terminal(capsys):
    task = LinearTask(d_x=1)
    model = ModelSpec.for_task(task, 6, n_layers=1, n_heads=1, d_model=8).build()
    g = torch.Generator().manual_seed(0)
    evaluate(model, task, 6, n_batches=3, batch_size=8, generator=g, baselines=False, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("eval") for line in lines) and "6/6" in lines[-1]  # id and ood, 3 each
    saturation(model, task, scales=[1.0, 2.0], n=8, generator=g, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("saturation") for line in lines) and "2/2" in lines[-1]
    compare_boundaries({"a": model, "b": model}, task, scales=[1.0, 2.0], n=8, generator=g, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("saturation b: 4/4")
    evaluate(model, task, 6, n_batches=1, batch_size=8, generator=g, baselines=False)  # progress is opt-in
    assert capsys.readouterr().err == ""


def test_cli_eval_and_saturation_print_progress_lines(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--task", "linear", "--d", "1", "--steps", "2", "--d-model", "8", "--out", str(out)]) == 0
    assert "linear(" in capsys.readouterr().err  # the training's own progress lines
    assert main(["eval", "--ckpt", str(out), "--n", "16"]) == 0
    assert "eval ood: 2/2" in capsys.readouterr().err
    assert main(["saturation", "--ckpt", str(out), "--n", "8", "--scales", "1,2"]) == 0
    assert "saturation: 2/2" in capsys.readouterr().err
    shutil.copytree(out, tmp_path / "twin")
    assert main(["saturation", "--ckpt", str(out), "--n", "8", "--scales", "1,2", "--compare", str(tmp_path / "twin")]) == 0
    assert "twin: 4/4" in capsys.readouterr().err
