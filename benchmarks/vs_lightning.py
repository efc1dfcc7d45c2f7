"""trainlab's Trainer against PyTorch Lightning: the same CNN, data tensors, batch, optimizer and schedule.

Lightning runs as its users run it: a minimal LightningModule (training_step logging the loss to the
progress bar, validation_step logging accuracy, Adam + a per-step cosine schedule) and a Trainer with its
defaults on: the progress bar, the TensorBoard logger, a ModelCheckpoint on val/acc and the model summary;
data from a DataLoader over the tensors. trainlab runs Trainer.fit with the callbacks `trainlab train`
builds by default (checkpoint best.pt + last.pt, TensorBoard, console, update-ratio and activation
statistics) on its DeviceLoader. Both train one epoch of `--steps` batches, validate on the same images
and save a checkpoint; the figure is the median wall time of that fit, alternating round by round in this
one process.

Lightning is not a trainlab dependency: it is installed on first use into benchmarks/.lightning (pip
--target, without its dependencies that trainlab's environment already has), which only this script
puts on sys.path.

    python benchmarks/vs_lightning.py [--steps 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import copy
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import figure, median, write_record
from trainer_vs_plain import trainlab_epoch
from trainlab.data.datasets import load_fashion_mnist
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.models.cnn import CNN

LIGHTNING_HOME = Path(__file__).with_name(".lightning")
# what lightning needs beyond what trainlab's environment has (torch, tensorboard, pyyaml, packaging, ...)
LIGHTNING_PACKAGES = ["lightning>=2.4,<3", "lightning-utilities>=0.10", "torchmetrics>=1.0", "fsspec[http]>=2022.5",
                      "tqdm>=4.57"]


def import_lightning():
    sys.path.insert(0, str(LIGHTNING_HOME))
    try:
        import lightning  # noqa: F401
    except ImportError:
        print(f"installing PyTorch Lightning into {LIGHTNING_HOME} (benchmark only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target",
                        str(LIGHTNING_HOME), *LIGHTNING_PACKAGES], check=True)
        importlib.invalidate_caches()  # the folder was on sys.path, empty, when the first import looked
    import lightning

    return lightning


def lightning_module(L, model: torch.nn.Module, steps: int):
    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_index):
            images, labels = batch
            loss = F.cross_entropy(self.model(images), labels)
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_index):
            images, labels = batch
            logits = self.model(images)
            self.log("val/loss", F.cross_entropy(logits, labels))
            self.log("val/acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    return Classifier()


def lightning_fit(L, model, train, val, batch_size: int, steps: int, folder: str) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, default_root_dir=folder,
                        logger=TensorBoardLogger(folder), log_every_n_steps=50,
                        callbacks=[ModelCheckpoint(dirpath=folder, monitor="val/acc", mode="max")],
                        num_sanity_val_steps=0)
    train_loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(TensorDataset(*val), batch_size=batch_size)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(lightning_module(L, model, steps), train_loader, val_loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/vs_lightning.json)")
    args = parser.parse_args()
    L = import_lightning()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    data = load_fashion_mnist("data", download=True)
    count = args.steps * args.batch_size
    images, labels = data.train_images[:count], data.train_labels[:count]
    val_images, val_labels = data.test_images[:1024], data.test_labels[:1024]
    normalize = MeanStd().fit(images)
    train_floats, val_floats = (normalize(images), labels), (normalize(val_images), val_labels)
    loader = DeviceLoader(images, labels, args.batch_size, normalize=normalize, shuffle=True, drop_last=True)
    val_loader = DeviceLoader(val_images, val_labels, args.batch_size, normalize=normalize)
    torch.manual_seed(0)
    reference = CNN(list(data.input_shape), data.num_classes)
    print(f"fashion_mnist: {count} images, batch {args.batch_size}, {args.steps} steps + 1024 validation images "
          f"per fit, {torch.get_num_threads()} threads, lightning {L.__version__}")
    seconds = {"lightning": [], "trainlab": []}
    with tempfile.TemporaryDirectory() as folder:
        lightning_fit(L, copy.deepcopy(reference), train_floats, val_floats, args.batch_size, 5, f"{folder}/warm-l")
        trainlab_epoch(copy.deepcopy(reference), loader, val_loader, 5, f"{folder}/warm-t")
        for round_index in range(args.rounds):
            started = time.perf_counter()
            lightning_fit(L, copy.deepcopy(reference), train_floats, val_floats, args.batch_size, args.steps,
                          f"{folder}/l{round_index}")
            seconds["lightning"].append(time.perf_counter() - started)
            started = time.perf_counter()
            trainlab_epoch(copy.deepcopy(reference), loader, val_loader, args.steps, f"{folder}/t{round_index}")
            seconds["trainlab"].append(time.perf_counter() - started)
            print(f"round {round_index + 1}: lightning {seconds['lightning'][-1]:6.2f} s   "
                  f"trainlab {seconds['trainlab'][-1]:6.2f} s")
    theirs, ours = median(seconds["lightning"]), median(seconds["trainlab"])
    ratio = theirs / ours
    print(f"median: lightning {theirs:.2f} s, trainlab {ours:.2f} s: trainlab {ratio:.2f}x as fast")
    write_record("vs_lightning", [
        figure("trainlab / PyTorch Lightning, speed of one fit (train + validate + checkpoint)", round(ratio, 2),
               "x", "> 1", ratio > 1, trainlab_s=round(ours, 2), lightning_s=round(theirs, 2),
               samples_per_s_trainlab=round(count / ours), samples_per_s_lightning=round(count / theirs)),
    ], args.json, seconds=seconds, steps=args.steps, batch_size=args.batch_size, lightning=L.__version__)


if __name__ == "__main__":
    main()
