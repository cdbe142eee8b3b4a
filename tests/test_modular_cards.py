"""scripts/modular_cards.py: a chain of runs, each started from the last-step weights of the one before
(train.init_from), ships as one history with steps counted from the first run's start."""
import importlib.util
from pathlib import Path

from interp.checkpoint import init_chain, read_config, read_metrics
from interp.spec import ModelSpec
from interp.tasks import ModularTask
from interp.train import TrainConfig, train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "modular_cards.py"
spec = importlib.util.spec_from_file_location("modular_cards", SCRIPT)
modular_cards = importlib.util.module_from_spec(spec)
spec.loader.exec_module(modular_cards)


def test_a_chain_of_three_runs_is_one_history(tmp_path):
    task = ModularTask(p=5, n_tasks=6)
    model = ModelSpec.for_task(task, 5, n_layers=1, d_model=16)
    base = TrainConfig(steps=12, n_examples=5, batch_size=12, eval_every=4, checkpoint_every=4, warmup_steps=2,
                       snapshots=4)
    runs, start = [], None
    for i, steps in enumerate((12, 8, 10)):
        out = tmp_path / f"run{i}"
        train(task, model, TrainConfig(**(base.to_dict() | {"steps": steps, "seed": i, "init_from": start})),
              out=out, progress=False)
        runs.append(out)
        start = str(out)
    assert init_chain(runs[-1]) == runs
    train_dict, history, snapshots, files = modular_cards.with_history(runs)
    assert (train_dict["steps_before"], train_dict["steps_done"]) == (20, 30)
    # every run's log, its steps offset by the steps of the runs before it
    expected = [m | {"step": m["step"] + offset} for run, offset in zip(runs, (0, 12, 20))
                for m in read_metrics(run / "metrics.jsonl")]
    assert history == expected and [m["step"] for m in history] == sorted({m["step"] for m in history})
    # each run's last step and the best-OOD step are kept, and each file is the snapshot its run saved at that step
    assert {12, 20, 30, snapshots["best_ood_step"]} <= set(snapshots["steps"])
    assert snapshots["best_ood_step"] == train_dict["best_step"]
    for step in snapshots["steps"]:
        run, offset = next((r, o) for r, o, end in zip(runs, (0, 12, 20), (12, 20, 30)) if step <= end)
        local = read_config(run)["snapshots"]["files"][str(step - offset)]
        assert files[snapshots["files"][str(step)]] == (run / local).read_bytes()
    assert train_dict["weights"].startswith(f"last step (30: 12 in {runs[0]}, then 8 in {runs[1]}, then 10 in {runs[2]}")
