"""`trainlab report`: the answer of a sweep, read back from run folders.

Most tests build fake run folders (summary.json, .hydra/overrides.yaml and, for curves, TensorBoard
events written with tensorboard's own writer) and call the command's main in-process; the slow ones
run a real sweep through the CLI and open the HTML page in headless Chromium.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_trainlab
from trainlab.commands import report
from trainlab.reports import plots
from trainlab.reports.runs import REPORT_KIND

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# --- fake run folders ------------------------------------------------------------------------------


def write_events(folder: Path, tag: str, values: list[float], steps_per_epoch: int = 10) -> None:
    """A run's tensorboard/ as trainlab's callback leaves it: `tag` and `epoch` per epoch at the global step."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder / "tensorboard"))
    for epoch, value in enumerate(values, 1):
        step = epoch * steps_per_epoch
        for name, number in ((tag, value), ("epoch", float(epoch))):
            writer.add_event(Event(wall_time=time.time(), step=step,
                                   summary=Summary(value=[Summary.Value(tag=name, simple_value=number)])))
    writer.close()


def fake_run(folder: Path, overrides: list[str], best: float | None, test_acc: float | None = None,
             metric: str = "val/acc", mode: str = "max", status: str = "completed", error: str | None = None,
             curve: list[float] | None = None, epochs: int = 3, summary: bool = True, log: str = "") -> Path:
    folder.mkdir(parents=True)
    hydra = folder / ".hydra"
    hydra.mkdir()
    (hydra / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    (hydra / "config.yaml").write_text(f"seed: 0\ntrainer:\n  monitor: {metric}\n  mode: {mode}\n  epochs: {epochs}\n")
    (hydra / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n    config_name: train\n")
    if log:
        (folder / "train.log").write_text(log)
    if summary:
        data = {"status": status, "run_dir": str(folder), "device": "cpu", "params": 1442,
                "choices": {"dataset": "synthetic", "model": "cnn", "optimizer": "adam"},
                "epochs": epochs, "epochs_run": epochs if status == "completed" else 1,
                "best": {"metric": metric, "mode": mode, "value": best, "epoch": 2},
                "test": None if test_acc is None else {"loss": 0.5, "acc": test_acc},
                "time": {"train_s": 10.0, "eval_s": 2.0, "total_s": 12.5}, "train_samples_per_s": 4000.0}
        if error:
            data["error"] = error
        (folder / "summary.json").write_text(json.dumps(data))
    if curve:
        write_events(folder, metric, curve)
    return folder


def written(folder: Path) -> dict:
    data = json.loads((folder / "summary.json").read_text())
    assert data["kind"] == REPORT_KIND
    return data


def order(folder: Path) -> list[str]:
    return [run["run"] for run in written(folder)["runs"]]


@pytest.fixture
def lr_sweep(tmp_path: Path) -> Path:
    """Four lrs (one failed with a long error, one crashed before writing summary.json), val/acc (max)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    figures = {"0": ("0.0001", 0.80, 0.79), "1": ("0.001", 0.91, 0.90), "2": ("0.01", 0.85, 0.84),
               "3": ("0.1", 0.70, 0.69)}
    for job, (lr, best, test) in figures.items():
        fake_run(sweep / job, ["dataset=synthetic", f"optimizer.lr={lr}"], best, test,
                 curve=[best - 0.2, best - 0.05, best])
    fake_run(sweep / "4", ["dataset=synthetic", "optimizer.lr=1.0"], 0.1, status="failed",
             error="RuntimeError: " + "something went badly wrong in the loss " * 4)
    fake_run(sweep / "5", ["dataset=synthetic", "optimizer.lr=3.0"], None, summary=False,
             log="[2026-12-01 10:00:00,000][trainlab][ERROR] - CUDA out of memory\n")
    return sweep


# --- order, table, files ---------------------------------------------------------------------------


def test_runs_best_first_for_mode_max_and_failed_last(lr_sweep: Path, capsys):
    assert report.main([str(lr_sweep)]) == 0
    assert order(lr_sweep) == ["1", "2", "0", "3", "4", "5"]
    runs = {run["run"]: run for run in written(lr_sweep)["runs"]}
    assert runs["4"]["status"] == "failed" and runs["4"]["error"].count("badly") == 4  # json keeps all of it
    assert runs["5"]["status"] == "failed" and runs["5"]["error"] == "CUDA out of memory"  # from train.log
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if re.match(r"^│ \d ", line)]
    assert [re.split(r"\s*│\s*", line)[2] for line in lines] == ["1", "2", "0", "3", "4", "5"]
    assert "optimizer.lr" in out and "common: dataset=synthetic" in out
    assert "…" in out and out.count("badly") < 4, "the table shortens a long error"
    assert f"wrote {lr_sweep / 'summary.csv'}" in out and f"wrote {lr_sweep / 'summary.json'}" in out


def test_runs_best_first_for_mode_min(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for job, (wd, loss) in enumerate([("0", 0.40), ("0.0001", 0.31), ("0.001", 0.35), ("0.01", 0.52)]):
        fake_run(sweep / str(job), [f"optimizer.weight_decay={wd}"], loss, 0.9, metric="val/loss", mode="min")
    fake_run(sweep / "4", ["optimizer.weight_decay=1.0"], 0.05, status="diverged", metric="val/loss", mode="min",
             error="training diverged")
    assert report.main([str(sweep)]) == 0
    data = written(sweep)
    assert order(sweep) == ["1", "2", "0", "3", "4"], "lowest loss first; a diverged run last, however low"
    assert data["metric"] == "val/loss" and data["mode"] == "min"


def test_csv_and_json_hold_every_run_with_its_figures(lr_sweep: Path):
    assert report.main([str(lr_sweep)]) == 0
    rows = list(csv.DictReader((lr_sweep / "summary.csv").open()))
    assert [row["run"] for row in rows] == order(lr_sweep)
    assert "optimizer.lr" in rows[0] and "dataset" not in rows[0], "a column per swept key, not per common one"
    best = rows[0]
    assert (best["optimizer.lr"], float(best["best"]), float(best["test_acc"])) == ("0.001", 0.91, 0.90)
    assert (best["status"], best["epochs_run"], best["epochs"], float(best["total_s"])) == ("completed", "3", "3", 12.5)
    assert best["metric"] == "val/acc" and best["overrides"] == "dataset=synthetic optimizer.lr=0.001"
    assert Path(best["run_dir"]) == (lr_sweep / "1").resolve()
    assert rows[-1]["best"] == "" and rows[-1]["status"] == "failed"
    data = written(lr_sweep)
    assert data["swept"] == ["optimizer.lr"] and data["common"] == {"dataset": "synthetic"}
    assert data["totals"]["runs"] == 6 and data["totals"]["completed"] == 4
    assert data["totals"]["runs_total_s"] == pytest.approx(5 * 12.5)
    assert data["runs"][0]["choices"]["optimizer"] == "adam" and data["runs"][0]["params"] == 1442
    assert data["groups"] == [], "nothing repeated over seeds or folds"


def test_a_nan_from_a_diverged_run_is_null_in_strict_json(tmp_path: Path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["optimizer.lr=0.01"], 0.8, 0.8)
    fake_run(sweep / "1", ["optimizer.lr=10"], float("nan"), status="diverged", error="loss is nan")

    def refuse(constant):
        raise ValueError(f"{constant} in summary.json")

    assert report.main([str(sweep)]) == 0
    data = json.loads((sweep / "summary.json").read_text(), parse_constant=refuse)
    assert [(run["run"], run["best"]) for run in data["runs"]] == [("0", 0.8), ("1", None)]


def test_grouping_by_seed_gives_mean_std_and_n(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    figures = {("0.01", 0): (0.81, 0.80), ("0.01", 1): (0.84, 0.82), ("0.01", 2): (0.86, 0.85),
               ("0.1", 0): (0.88, 0.87), ("0.1", 1): (0.90, 0.88), ("0.1", 2): (0.89, 0.86),
               ("1.0", 0): (0.50, 0.49)}  # a single run: std "-"
    for job, ((lr, seed), (best, test)) in enumerate(figures.items()):
        fake_run(sweep / str(job), [f"optimizer.lr={lr}", f"seed={seed}"], best, test)
    assert report.main([str(sweep)]) == 0
    groups = written(sweep)["groups"]
    assert [g["overrides"] for g in groups] == [{"optimizer.lr": "0.1"}, {"optimizer.lr": "0.01"},
                                                {"optimizer.lr": "1.0"}], "best mean first"
    for group in groups:
        lr = group["overrides"]["optimizer.lr"]
        bests = [b for (key, _), (b, _) in figures.items() if key == lr]
        tests = [t for (key, _), (_, t) in figures.items() if key == lr]
        assert group["varies"] == (["seed"] if len(bests) > 1 else [])
        assert group["n"] == len(bests) and group["best"]["n"] == len(bests)
        assert group["best"]["mean"] == pytest.approx(statistics.mean(bests))
        assert group["test_acc"]["mean"] == pytest.approx(statistics.mean(tests))
        if len(bests) > 1:
            assert group["best"]["std"] == pytest.approx(statistics.stdev(bests))  # sample std (n-1)
            assert group["test_acc"]["std"] == pytest.approx(statistics.stdev(tests))
        else:
            assert group["best"]["std"] is None and group["test_acc"]["std"] is None
    out = capsys.readouterr().out
    top = next(line for line in out.splitlines() if re.match(r"^│ 1 │ 0\.1 ", line))
    assert f"{100 * statistics.mean([0.88, 0.90, 0.89]):.2f}%" in top
    assert f"{100 * statistics.stdev([0.88, 0.90, 0.89]):.2f}" in top
    single = next(line for line in out.splitlines() if re.match(r"^│ 3 │ 1\.0 ", line))
    assert re.search(r"50\.00% │\s+- │\s+49\.00% │\s+- │ 1 ", single), single


def test_k_fold_runs_are_grouped_like_seeds(tmp_path: Path):
    sweep = tmp_path / "sweep"
    scores = {"cnn": [0.90, 0.88, 0.91, 0.87, 0.89], "mlp": [0.85, 0.86, 0.84, 0.83, 0.87]}
    job = 0
    for model, folds in scores.items():
        for fold, value in enumerate(folds):
            fake_run(sweep / str(job), [f"model={model}", "dataset.folds=5", f"dataset.fold={fold}"], value, value - 0.01)
            job += 1
    assert report.main([str(sweep)]) == 0
    groups = written(sweep)["groups"]
    assert [(g["overrides"], g["varies"], g["n"]) for g in groups] == [
        ({"model": "cnn"}, ["dataset.fold"], 5), ({"model": "mlp"}, ["dataset.fold"], 5)]
    for group, model in zip(groups, ("cnn", "mlp")):
        assert group["best"]["mean"] == pytest.approx(statistics.mean(scores[model]))
        assert group["best"]["std"] == pytest.approx(statistics.stdev(scores[model]))


def test_the_sweeps_wall_clock_comes_from_the_train_logs(tmp_path: Path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["seed=0"], 0.8, 0.8, log="[2026-12-01 10:00:00,250][trainlab][INFO] - start\n"
                                                   "[2026-12-01 10:01:00,000][trainlab][INFO] - end\n")
    fake_run(sweep / "1", ["seed=1"], 0.9, 0.9, log="[2026-12-01 10:01:01,000][trainlab][INFO] - start\n"
                                                   "[2026-12-01 10:02:30,250][trainlab][INFO] - end\n")
    assert report.main([str(sweep), "--html"]) == 0
    assert written(sweep)["totals"]["wall_s"] == pytest.approx(150.0)
    assert "2m 30s" in (sweep / "report.html").read_text()


def test_a_failed_run_is_left_out_of_its_groups_figures(tmp_path: Path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["seed=0"], 0.8, 0.8)
    fake_run(sweep / "1", ["seed=1"], 0.9, 0.9)
    fake_run(sweep / "2", ["seed=2"], 0.1, status="failed", error="boom")
    assert report.main([str(sweep)]) == 0
    (group,) = written(sweep)["groups"]
    assert group["n"] == 2 and group["not_completed"] == ["2"]
    assert group["best"]["mean"] == pytest.approx(0.85)


# --- pictures --------------------------------------------------------------------------------------


def valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_curves_and_a_picture_per_swept_number(lr_sweep: Path):
    assert report.main([str(lr_sweep), "--top", "3"]) == 0
    width, height = valid_png(lr_sweep / "report_curves.png")
    assert width > 300 and height > 200
    valid_png(lr_sweep / "report_optimizer.lr.png")
    assert written(lr_sweep)["plots"] == ["report_curves.png", "report_optimizer.lr.png"]
    assert not (lr_sweep / "report_dataset.png").exists()


def test_curves_are_read_per_epoch_from_tensorboard(tmp_path: Path):
    run = fake_run(tmp_path / "run", ["seed=0"], 0.9, 0.9, curve=[0.5, 0.8, 0.9])
    tag, points, xlabel = plots.read_curve(run, ["val/acc"])
    assert tag == "val/acc" and xlabel == "epoch"
    assert [x for x, _ in points] == [1.0, 2.0, 3.0]
    assert [y for _, y in points] == pytest.approx([0.5, 0.8, 0.9])
    assert plots.read_curve(tmp_path, ["val/acc"])[1] == [], "no events: no curve"


def test_log_axis_for_values_over_decades_or_log_spaced():
    assert plots.log_axis([1e-4, 3e-4, 1e-3, 1e-2, 1e-1])
    assert plots.log_axis([0.001, 0.003, 0.01, 0.03])  # 1.5 decades, log-spaced
    assert not plots.log_axis([0.1, 0.2, 0.3, 0.4, 0.5])
    assert not plots.log_axis([0.0, 0.1, 0.5])  # a zero: no log axis
    assert not plots.log_axis([0.1, 0.4, 0.6, 0.9, 1.0])  # a decade, spread evenly


def test_a_grid_of_two_values_gets_no_picture_of_its_own(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for job, (lr, momentum) in enumerate([(lr, m) for lr in ("0.01", "0.1") for m in ("0.8", "0.85", "0.9")]):
        fake_run(sweep / str(job), [f"optimizer.lr={lr}", f"optimizer.momentum={momentum}"], 0.8 + job / 100, 0.8)
    assert report.main([str(sweep)]) == 0
    assert (sweep / "report_optimizer.momentum.png").exists(), "three values: a picture"
    assert not (sweep / "report_optimizer.lr.png").exists(), "two values: no picture"
    assert not (sweep / "report_curves.png").exists(), "no events, no curves"


# --- HTML ------------------------------------------------------------------------------------------


def test_html_is_self_contained_and_lists_every_run(lr_sweep: Path):
    assert report.main([str(lr_sweep), "--html"]) == 0
    page = (lr_sweep / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I), "nothing fetched"
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    rows = re.findall(r"<tr[^>]*><td class=num>(\d+)</td><td>([^<]*)</td>", page)
    assert [name for _, name in rows] == order(lr_sweep), "every run, best first"
    assert "CUDA out of memory" in page and page.count("badly") >= 4, "errors in full"
    for figure in ("cpu", "1,442", "4,000", "10.0 s", "wall clock", "optimizer.lr=0.001", "adam"):
        assert figure in page


def test_html_groups_table(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for job, seed in enumerate((0, 1)):
        fake_run(sweep / str(job), [f"seed={seed}"], 0.8 + seed / 10, 0.8)
    assert report.main([str(sweep), "--html"]) == 0
    page = (sweep / "report.html").read_text()
    assert "Groups" in page and f"{100 * statistics.stdev([0.8, 0.9]):.2f}" in page


# --- what counts as a run, where the files go -------------------------------------------------------


def test_no_runs_is_one_line_and_exit_2(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert report.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trainlab: error: {empty}: no trainlab runs found (")
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "missing: no trainlab runs found (no such file or folder)" in capsys.readouterr().err
    assert list(empty.rglob("*")) == [empty / "sub"], "nothing written"


def test_an_outputs_folder_reports_its_train_runs_only(tmp_path: Path):
    outputs = tmp_path / "outputs"
    fake_run(outputs / "train" / "2026-12-01" / "10-00-00", ["optimizer=sgd"], 0.8, 0.8)
    fake_run(outputs / "multirun" / "2026-12-01" / "11-00-00" / "0", ["optimizer=adam"], 0.9, 0.9)
    augment = outputs / "augment" / "2026-12-01" / "12-00-00" / ".hydra"
    augment.mkdir(parents=True)
    (augment / "hydra.yaml").write_text("hydra:\n  job:\n    name: augment\n    config_name: augment\n")
    assert report.main([str(outputs)]) == 0
    assert order(outputs) == ["multirun/2026-12-01/11-00-00/0", "train/2026-12-01/10-00-00"]
    assert report.main([str(outputs)]) == 0, "again: the report's own summary.json is no run"
    assert len(written(outputs)["runs"]) == 2


def test_a_single_run_folder_keeps_its_summary(tmp_path: Path, capsys):
    run = fake_run(tmp_path / "run", ["optimizer=sgd", "optimizer.lr=0.05"], 0.8, 0.79, curve=[0.6, 0.8])
    before = (run / "summary.json").read_bytes()
    assert report.main([str(run)]) == 0
    assert (run / "summary.json").read_bytes() == before, "the run's own summary.json is untouched"
    data = json.loads((run / "report_summary.json").read_text())
    assert data["kind"] == REPORT_KIND and data["swept"] == ["optimizer", "optimizer.lr"]
    assert (run / "report_summary.csv").is_file() and (run / "report_curves.png").is_file()
    assert "optimizer.lr" in capsys.readouterr().out


def test_out_folder_and_several_paths(tmp_path: Path, monkeypatch):
    fake_run(tmp_path / "a" / "0", ["seed=0"], 0.8, 0.8)
    fake_run(tmp_path / "b" / "0", ["seed=1"], 0.9, 0.9)
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")]) == 0
    assert order(tmp_path / "both") == ["b/0", "a/0"]
    assert not (tmp_path / "a" / "summary.json").exists()
    monkeypatch.chdir(tmp_path)
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    (made,) = (tmp_path / "outputs" / "report").glob("*/*/summary.json")
    assert len(written(made.parent)["runs"]) == 2


def test_report_sweep_is_the_default_report(lr_sweep: Path):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    path = report.report_sweep(lr_sweep, console=console)
    assert path == lr_sweep / "summary.json" and written(lr_sweep)["runs"]
    assert (lr_sweep / "summary.csv").is_file() and (lr_sweep / "report_curves.png").is_file()
    assert not (lr_sweep / "report.html").exists()
    assert "optimizer.lr" in console.file.getvalue()


def test_runner_shape(tmp_path: Path, lr_sweep: Path):
    from omegaconf import OmegaConf

    from trainlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"report.paths=\[\]"):
        report.check(OmegaConf.create({"report": {"paths": []}}), None)
    cfg = OmegaConf.create({"report": {"paths": [str(lr_sweep)], "html": True, "top": 2}})
    report.check(cfg, None)
    out = tmp_path / "runner"
    out.mkdir()
    report.run(cfg, out)
    assert len(written(out)["runs"]) == 6 and (out / "report.html").is_file()
    assert OmegaConf.load(REPO / "configs" / "report.yaml").report.top == report.TOP


def test_fifty_runs_fast_and_without_torch(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for job in range(50):
        lr = 10 ** (-4 + 3 * ((job * 37) % 50) / 50)  # a log-uniform "random search"
        best = 0.9 - abs(-2.5 - (-4 + 3 * ((job * 37) % 50) / 50)) / 10
        fake_run(sweep / str(job), [f"optimizer.lr={lr:.3g}", f"optimizer.weight_decay={job / 1000:g}"], best, best,
                 curve=[best - 0.1, best] if job < 10 else None)
    code = ("import sys, time; start = time.perf_counter(); from trainlab.commands.report import main; "
            f"code = main([{str(sweep)!r}, '--html']); "
            "print(round(time.perf_counter() - start, 2), 'torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seconds, torch_loaded = done.stdout.split()[-2:]
    assert torch_loaded == "False", "the report imports no torch"
    assert float(seconds) < 10, f"{seconds} s for 50 runs"  # ~1.5 s here; the bound only catches a blow-up
    assert len(written(sweep)["runs"]) == 50
    valid_png(sweep / "report_optimizer.lr.png")
    valid_png(sweep / "report_optimizer.weight_decay.png")


# --- through the real CLI, and in a browser ----------------------------------------------------------


@pytest.mark.slow
def test_report_of_a_real_sweep(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    done = run_trainlab(["train", "-m", "dataset=synthetic", "trainer.epochs=2", "model.channels=[8,16]",
                         "dataset.num_train=400", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert report.main([str(sweep), "--html"]) == 0
    data = written(sweep)
    assert sorted(run["run"] for run in data["runs"]) == ["0", "1"] and data["swept"] == ["seed"]
    for run in data["runs"]:
        own = json.loads((sweep / run["run"] / "summary.json").read_text())
        assert run["best"] == own["best"]["value"] and run["test_acc"] == own["test"]["acc"]
        assert run["status"] == "completed" and run["epochs_run"] == 2
    (group,) = data["groups"]
    assert group["n"] == 2 and group["varies"] == ["seed"]
    assert group["best"]["mean"] == pytest.approx(statistics.mean(r["best"] for r in data["runs"]))
    valid_png(sweep / "report_curves.png")
    assert (sweep / "report.html").is_file() and "seed" in capsys.readouterr().out


def screenshot(page: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,1600",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_html_opens_in_a_browser(lr_sweep: Path, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: apt-get install chromium")
        pytest.skip("chromium not installed")
    assert report.main([str(lr_sweep), "--html"]) == 0
    png = tmp_path / "shot.png"
    done = screenshot(lr_sweep / "report.html", png, tmp_path / "profile")
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    with Image.open(png) as image:
        assert image.size == (1200, 1600)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    counts = {rgb: n for n, rgb in colors}
    # the page's CSS rendered the tables: the header cells' background (#eef1f6), the best run's row (#eef8ee),
    # failed rows (#fdf1f0)
    assert counts.get((0xEE, 0xF1, 0xF6), 0) > 2000, "no table header drawn"
    assert counts.get((0xEE, 0xF8, 0xEE), 0) > 2000, "no best-run row drawn"
    assert counts.get((0xFD, 0xF1, 0xF0), 0) > 2000, "no failed-run rows drawn"
