"""A finished run as a user sees it in TensorBoard: the real server on the run folder, read back over HTTP.

The endpoints are TensorBoard's own (tensorboard/plugins/*/*_plugin.py, get_plugin_apps): what its web
frontend fetches for the Scalars, Histograms, Images, Custom Scalars, Text and HParams tabs.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import run_trainlab

RUN = ["train", "dataset=synthetic", "trainer.epochs=3", "model.channels=[16,32]", "optimizer.lr=0.003",
       "trainer.log_every=5", "callbacks.update_ratio.every=5",
       "callbacks=[default,histograms]", "callbacks.histograms.every=15"]  # histograms at the 3 epoch ends
STARTUP_S = 60   # for the server to answer and to have loaded the run's event files
REQUEST_S = 20   # per HTTP request
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# TensorBoard names a run by its folder relative to --logdir: the run folder's events are in tensorboard/,
# and the HParams session (with the result scalars hparam/*) is in tensorboard/hparams/.
RUN_NAME = "tensorboard"
HPARAMS_RUN = "tensorboard/hparams"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running `tensorboard` process on 127.0.0.1 and JSON/bytes requests to it."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.base, self.log = process, f"http://127.0.0.1:{port}", log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def get(self, path: str, data: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_S) as response:
                assert response.status == 200, f"{path}: HTTP {response.status}"
                return response.read()
        except urllib.error.HTTPError as e:
            pytest.fail(f"{path}: HTTP {e.code} {e.read()[:500]!r}\nserver output:\n{self.output()}")

    def json(self, path: str, **params):
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return json.loads(self.get(path + query))

    def post(self, path: str, body: dict):
        return json.loads(self.get(path, json.dumps(body).encode()))

    def wait_for(self, path: str, ready, what: str):
        """Poll `path` until ready(json) holds: the server loads event files in the background after it starts."""
        deadline, last = time.monotonic() + STARTUP_S, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tensorboard exited with {self.process.returncode} before {what}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=REQUEST_S) as response:
                    last = json.loads(response.read())
                if ready(last):
                    return last
            except (urllib.error.URLError, ConnectionError, socket.timeout, json.JSONDecodeError) as e:
                last = repr(e)
            time.sleep(0.5)
        pytest.fail(f"no {what} from {self.base}{path} within {STARTUP_S} s; last answer: {str(last)[:500]}\n"
                    f"server output:\n{self.output()}")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    result = run_trainlab([*RUN, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")), "no event files"
    return tmp_path / "run"


@contextlib.contextmanager
def tensorboard_on(logdir: Path, tmp_path: Path):
    tensorboard = Path(sys.executable).with_name("tensorboard")
    if not tensorboard.exists():
        pytest.fail(f"the tensorboard script is not installed next to {sys.executable}")
    port, log = free_port(), tmp_path / "tensorboard.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(tensorboard), "--logdir", str(logdir), "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def server(run_dir: Path, tmp_path: Path):
    with tensorboard_on(run_dir, tmp_path) as running:
        yield running


@pytest.mark.slow
def test_tensorboard_server_shows_the_run(run_dir: Path, server: Server):
    summary = json.loads((run_dir / "summary.json").read_text())
    # the last series written: test/* at the end of the run's events, hparam/* in the HParams events file
    loaded = {"val/acc", "test/acc"}
    tags = server.wait_for("/data/plugin/scalars/tags", lambda d: loaded <= d.get(RUN_NAME, {}).keys()
                           and "hparam/best_val_acc" in d.get(HPARAMS_RUN, {}),
                           f"scalar tags {sorted(loaded)} and hparam/best_val_acc")[RUN_NAME]

    # Scalars tab: every series the run logs, val/acc per epoch with the best in summary.json
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "train/grad_norm", "update_ratio/median",
                "test/acc", "test/loss", "epoch"):
        assert tag in tags, f"{tag} missing from the Scalars tab: {sorted(tags)}"
    assert any(t.startswith("update_ratio/") and t != "update_ratio/median" for t in tags), sorted(tags)
    val_acc = server.json("/data/plugin/scalars/scalars", run=RUN_NAME, tag="val/acc")  # [[wall_time, step, value]]
    assert [step for _, step, _ in val_acc] == [15, 30, 45], val_acc
    assert all(math.isfinite(value) and 0 <= value <= 1 for _, _, value in val_acc), val_acc
    assert max(value for _, _, value in val_acc) == pytest.approx(summary["best"]["value"], abs=1e-6)
    train_loss = server.json("/data/plugin/scalars/scalars", run=RUN_NAME, tag="train/loss")
    assert len(train_loss) == 9 and all(math.isfinite(value) for _, _, value in train_loss), train_loss

    # Histograms tab (when the run wrote any): bucket counts add up to the tensor's size
    histogram_tags = server.json("/data/plugin/histograms/tags").get(RUN_NAME, {})
    if histogram_tags:
        assert "weights/head.weight" in histogram_tags, sorted(histogram_tags)
        numel = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]["head.weight"].numel()
        series = server.json("/data/plugin/histograms/histograms", run=RUN_NAME, tag="weights/head.weight")
        assert [step for _, step, _ in series] == [15, 30, 45], [s[:2] for s in series]
        for _, step, buckets in series:  # [[left, right, count], ...]
            assert all(math.isfinite(x) for bucket in buckets for x in bucket), step
            assert sum(count for _, _, count in buckets) == pytest.approx(numel), step

    # Images tab: the augmented batch and the confusion matrices, each a PNG the browser can show
    images = server.json("/data/plugin/images/tags")[RUN_NAME]
    assert {"images/augmented_batch", "confusion/val", "confusion/test"} <= images.keys(), sorted(images)
    for tag in ("images/augmented_batch", "confusion/val"):
        (entry, *_) = server.json("/data/plugin/images/images", run=RUN_NAME, tag=tag)
        png = server.get("/data/plugin/images/individualImage?" + entry["query"])  # query: blob_key=...
        assert png.startswith(PNG_MAGIC) and len(png) > 1000, f"{tag}: not a PNG: {png[:40]!r}"

    # Custom Scalars tab: the "train vs val" layout, and its loss chart's data
    layout = server.json("/data/plugin/custom_scalars/layout")
    (category,) = [c for c in layout["category"] if c["title"] == "train vs val"]
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
    assert {"train/loss", "val/loss"} <= set(charts["loss"]) and {"train/acc", "val/acc"} <= set(charts["accuracy"])
    loss_chart = server.json("/data/plugin/custom_scalars/scalars", run=RUN_NAME, tag="^(train|val)/loss$")
    assert loss_chart["regex_valid"] and {"train/loss", "val/loss"} <= loss_chart["tag_to_events"].keys()

    # Text tab: the resolved config
    assert "config/text_summary" in server.json("/data/plugin/text/tags")[RUN_NAME]
    (text,) = server.json("/data/plugin/text/text", run=RUN_NAME, tag="config/text_summary")
    assert "lr: 0.003" in text["text"] and "name: synthetic" in text["text"], text["text"][:500]

    # HParams tab: the experiment's columns, then the run's session with its values and metrics
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparam_names = {info["name"] for info in experiment.get("hparamInfos", [])}
    metric_tags = {info["name"]["tag"] for info in experiment.get("metricInfos", [])}
    assert {"optimizer.lr", "optimizer", "dataset", "trainer.epochs"} <= hparam_names, experiment
    assert "hparam/best_val_acc" in metric_tags, experiment
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "optimizer.lr"}, {"metric": {"tag": "hparam/best_val_acc"}}]})
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["optimizer.lr"] == pytest.approx(0.003) and group["hparams"]["dataset"] == "synthetic"
    metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert metrics["hparam/best_val_acc"] == pytest.approx(summary["best"]["value"], abs=1e-6)
    assert metrics["hparam/test_acc"] == pytest.approx(summary["test"]["acc"], abs=1e-6)


@pytest.mark.slow
def test_the_hparams_tab_of_a_sweep_marks_the_swept_keys_as_differing(tmp_path: Path):
    """Every run writes only its session; TensorBoard builds the experiment from all of them, so the keys the
    sweep varied (optimizer.lr, and optimizer.weight_decay from the command line) differ and the rest do not."""
    sweep = tmp_path / "sweep"
    result = run_trainlab(["train", "-m", "dataset=synthetic", "trainer.epochs=1", "model.channels=[8,16]",
                           "dataset.num_train=300", "optimizer.lr=0.001,0.01", "optimizer.weight_decay=0.0001",
                           f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with tensorboard_on(sweep, tmp_path) as server:
        sessions = {f"{n}/{HPARAMS_RUN}" for n in ("0", "1")}
        server.wait_for("/data/plugin/scalars/tags",
                        lambda d: all("hparam/best_val_acc" in d.get(run, {}) for run in sessions),
                        "both jobs' hparam/best_val_acc")
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
        differs = {info["name"]: info.get("differs", False) for info in experiment["hparamInfos"]}
        assert differs["optimizer.lr"] is True, experiment
        assert differs["optimizer.weight_decay"] is False and differs["seed"] is False, experiment
        metric_tags = {info["name"]["tag"] for info in experiment.get("metricInfos", [])}
        assert metric_tags == {"hparam/best_val_acc", "hparam/test_acc", "hparam/test_loss"}, metric_tags
        groups = server.post("/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "optimizer.lr"}, {"metric": {"tag": "hparam/best_val_acc"}}]})
        rates = sorted(group["hparams"]["optimizer.lr"] for group in groups["sessionGroups"])
        assert rates == pytest.approx([0.001, 0.01]), groups
