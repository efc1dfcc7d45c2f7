"""Screenshots of TensorBoard on real trainlab output, for the README.

    .venv/bin/python tools/tensorboard_screenshot.py [--out docs]

In a temporary folder it makes a small run and a small learning-rate sweep with the `trainlab` CLI, serves
each with the real TensorBoard server on 127.0.0.1 (a free port), and photographs it with headless
Chromium (Debian: apt-get install chromium):

    <out>/tensorboard_train_vs_val.png  Custom Scalars tab: train and val loss/accuracy of the run on one chart
    <out>/tensorboard_scalars.png       Scalars tab: train/val loss and accuracy of the sweep's three runs
    <out>/tensorboard_hparams.png       HParams tab of the sweep: optimizer.lr against the runs' results

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no extra
package), because two of the views need a click that a URL cannot express: the chart legends ("Matches")
of Custom Scalars, and the HParams columns (the dashboard shows the first 5 hyperparameters, those
that differ first; the shot shows optimizer.lr and optimizer only).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
WINDOW = (1400, 900)
MAX_PNG_BYTES = 400_000
RUN = ["train", "dataset=synthetic", "trainer.epochs=3", "model.channels=[16,32]", "optimizer.lr=0.003",
       "trainer.log_every=5", "callbacks.update_ratio.every=5"]
SWEEP = ["train", "-m", "dataset=synthetic", "trainer.epochs=2", "model.channels=[8,16]",
         "optimizer.lr=0.001,0.003,0.01", "trainer.log_every=5"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"]

# Page-side helpers: TensorBoard's dashboards are Polymer elements, each behind its own shadow root.
DEEP = """
window.__deep = (selector) => {
  const found = [];
  const walk = (root) => {
    root.querySelectorAll(selector).forEach((e) => found.push(e));
    root.querySelectorAll('*').forEach((e) => { if (e.shadowRoot) walk(e.shadowRoot); });
  };
  walk(document);
  return found;
};
"""


def log(message: str) -> None:
    print(f"tensorboard_screenshot: {message}", file=sys.stderr, flush=True)


def trainlab(args: list[str], cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    started = time.monotonic()
    result = subprocess.run([str(BIN / "trainlab"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        sys.exit(f"trainlab {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    log(f"trainlab {' '.join(args)}: {time.monotonic() - started:.0f} s")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


@contextmanager
def tensorboard(logdir: Path, runs: int, timeout: float = 90):
    """The TensorBoard server on logdir; yields its base URL once all `runs` runs' HParams data is loaded."""
    port, log_file = free_port(), logdir.parent / f"tensorboard-{logdir.name}.log"
    with log_file.open("w") as out:
        process = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                sys.exit(f"tensorboard exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
            try:  # hparam/* are the last scalars a run writes (its HParams event file)
                tags = get_json(base + "/data/plugin/scalars/tags")
                if sum("hparam/best_val_acc" in t for t in tags.values()) >= runs:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"tensorboard on {logdir} had not loaded {runs} run(s) after {timeout:.0f} s:\n"
                         f"{log_file.read_text()[-3000:]}")
            time.sleep(0.5)
        log(f"tensorboard --logdir {logdir}: {base}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe: fd 3 in, fd 4 out, JSON + NUL."""

    def __init__(self, executable: str, profile: Path, log_file: Path):
        to_chrome = os.pipe()
        from_chrome = os.pipe()
        # The child's ends away from 3 and 4 (dup2 onto itself would keep close-on-exec), non-inheritable.
        child_in = fcntl.fcntl(to_chrome[0], fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chrome[1], fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome[0])
        os.close(from_chrome[1])

        def wire_pipe() -> None:  # in the child, before exec: the pipe ends become its fds 3 and 4
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        with log_file.open("w") as out:
            self.process = subprocess.Popen(
                [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                 "about:blank"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                close_fds=False, preexec_fn=wire_pipe)
        os.close(child_in)
        os.close(child_out)
        self.log_file = log_file
        self.writer = os.fdopen(to_chrome[1], "wb", buffering=0)
        self.reader = os.fdopen(from_chrome[0], "rb", buffering=0)
        self.buffer = b""
        self.next_id = 0
        self.session = None
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target = page["targetId"] if page else self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.resize(*WINDOW)

    def resize(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _message(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            if not select.select([self.reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise RuntimeError(f"no answer from chromium within {timeout:.0f} s")
            chunk = self.reader.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe:\n{self.log_file.read_text()[-3000:]}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        while True:  # events arrive in between; only the answer to this call matters here
            answer = self._message()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=DEEP + expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise RuntimeError(f"the page never showed {what} within {timeout:.0f} s ({expression})")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", "a loaded document")

    def open_unclipped(self, url: str) -> None:
        """url with "Ignore outliers in chart scaling" off, so the charts show whole curves. The setting lives in
        the origin's localStorage, not in the URL: set it on the server's start page first."""
        self.open(url.split("#")[0])
        self.evaluate("localStorage.setItem('_ignoreYOutliers', 'false'), true")
        self.open(url)

    def screenshot(self, path: Path) -> None:
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(shrink(png))
        log(f"wrote {path} ({path.stat().st_size // 1000} KB)")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.writer.close()
        self.reader.close()


def shrink(png: bytes) -> bytes:
    """The screenshot, quantized to a palette when it is larger than MAX_PNG_BYTES."""
    if len(png) <= MAX_PNG_BYTES:
        return png
    from PIL import Image

    for colors in (256, 128, 64):
        out = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors).save(out, "PNG", optimize=True)
        if out.tell() <= MAX_PNG_BYTES:
            break
    return out.getvalue()


def hash_url(base: str, tab: str, **state: str) -> str:
    """A dashboard URL: TensorBoard keeps a tab's settings (smoothing, tag filter) in the URL's fragment."""
    return f"{base}/#{tab}" + "".join(f"&{k}={urllib.parse.quote(v, safe='')}" for k, v in state.items())


def train_vs_val(browser: Chromium, base: str, path: Path) -> None:
    """Custom Scalars: the layout's "train vs val" loss and accuracy charts, full width, legends open, no
    smoothing; a taller page so that both charts show."""
    browser.resize(WINDOW[0], 1300)
    browser.open_unclipped(hash_url(base, "custom_scalars", _smoothingWeight="0"))
    cards = "__deep('tf-custom-scalar-multi-line-chart-card')"
    browser.wait_for(f"{cards}.length >= 2 && {cards}.every((c) => c._seriesNames.length >= 2)",
                     "the two train-vs-val charts with train and val series")
    browser.evaluate(f"{cards}.forEach((c) => {{ c.shadowRoot.querySelector('.toggle-matches-button').click(); "
                     "c._toggleExpanded(); }), true")  # open each legend; the charts full width
    time.sleep(3)  # the charts draw, the legends open
    browser.screenshot(path)
    browser.resize(*WINDOW)


def scalars(browser: Chromium, base: str, path: Path, runs: int) -> None:
    """Scalars: train/val loss and accuracy, one curve a run."""
    browser.open_unclipped(hash_url(base, "scalars", _smoothingWeight="0", tagFilter=r"^(train|val)/(loss|acc)$"))
    browser.wait_for("__deep('tf-scalar-card').length >= 4", "four scalar charts")
    browser.wait_for(f"__deep('tf-scalar-card').every((c) => c.dataToLoad && c.dataToLoad.length >= {runs})",
                     f"{runs} runs in every chart")
    time.sleep(4)  # each chart fetches and draws its series
    browser.screenshot(path)


def hparams(browser: Chromium, base: str, path: Path, columns: set[str], log_scale: str) -> None:
    """HParams, parallel coordinates: the hyperparameters in `columns` and every metric, one line a run,
    coloured by the first metric; `log_scale` on a log axis."""
    browser.open(hash_url(base, "hparams"))
    boxes = "__deep('paper-checkbox.hparam-checkbox')"
    names = browser.wait_for(f"{boxes}.length && {boxes}.map((b) => b.textContent.trim())",
                             "the hyperparameter checkboxes")
    missing = columns - set(names)
    if missing:
        raise RuntimeError(f"the HParams tab has no {sorted(missing)} (it lists {names})")
    browser.evaluate(f"{boxes}.forEach((b) => {{ if (b.checked !== {json.dumps(sorted(columns))}"
                     ".includes(b.textContent.trim())) b.click(); }), true")
    browser.wait_for(f"{boxes}.filter((b) => b.checked).length === {len(columns)}", "the chosen columns")
    tab = "__deep('paper-tab').find((t) => t.textContent.trim().toUpperCase() === 'PARALLEL COORDINATES VIEW')"
    browser.wait_for(f"!!{tab}", "the parallel coordinates view's tab")
    browser.evaluate(f"{tab}.click(), true")
    log_button = f"__deep('paper-radio-button').find((b) => b.id === {json.dumps('logScaleButton_' + log_scale)})"
    browser.wait_for(f"!!{log_button} && !{log_button}.disabled", f"the log-scale button of {log_scale}")
    browser.evaluate(f"{log_button}.click(), true")
    browser.wait_for("__deep('tf-hparams-parallel-coords-plot').some((p) => "
                     "p.shadowRoot && p.shadowRoot.querySelectorAll('path').length > 0)", "the plot's lines")
    time.sleep(3)
    browser.screenshot(path)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium: apt-get install chromium")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs",
                        help="folder for the PNG files (default: the checkout's docs/)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tensorboard_screenshot_") as tmp:
        tmp = Path(tmp)
        trainlab([*RUN, f"hydra.run.dir={tmp / 'run'}"], tmp)
        trainlab([*SWEEP, f"hydra.sweep.dir={tmp / 'sweep'}"], tmp)
        with tensorboard(tmp / "run", runs=1) as run_url, tensorboard(tmp / "sweep", runs=3) as sweep_url:
            browser = Chromium(chromium, tmp / "chromium-profile", tmp / "chromium.log")
            try:
                train_vs_val(browser, run_url, args.out / "tensorboard_train_vs_val.png")
                scalars(browser, sweep_url, args.out / "tensorboard_scalars.png", runs=3)
                hparams(browser, sweep_url, args.out / "tensorboard_hparams.png", {"optimizer", "optimizer.lr"},
                        log_scale="optimizer.lr")
            finally:
                browser.close()


if __name__ == "__main__":
    main()
