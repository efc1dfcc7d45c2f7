"""Data: datasets as uint8 tensors (or streamed files), splits, preprocessing, on-device augmentation, loaders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import torch

from trainlab.config import instantiate
from trainlab.data.pipeline import Pipeline
from trainlab.data.datasets import load_dataset
from trainlab.data.loader import DeviceLoader
from trainlab.data.mixing import Mixer
from trainlab.data.preprocess import MeanStd, Preprocessor
from trainlab.data.splits import split_train_val
from trainlab.data.stream import StreamedDataset, StreamLoader, sample_images, split_streamed
from trainlab.errors import ConfigError
from trainlab.runtime import resolve_eval_batch_size


@dataclass
class DataBundle:
    """Everything the trainer needs from the data: loaders plus what describes them."""

    train: DeviceLoader | StreamLoader
    val: DeviceLoader | StreamLoader
    test: DeviceLoader | StreamLoader
    preprocess: Preprocessor
    augment: Pipeline
    mix: Optional[Mixer]
    input_shape: tuple[int, int, int]
    classes: list[str]
    train_sample: Optional[torch.Tensor] = None  # streamed: the decoded sample the statistics came from
    target: Optional["TargetData"] = None         # domain adaptation: the target domain's loaders

    def training_images(self) -> torch.Tensor:
        """uint8 training images: the whole split when it is in memory, else the decoded sample."""
        return self.train.images if isinstance(self.train, DeviceLoader) else self.train_sample

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class TargetData:
    """The target domain's loaders: `train` yields its images with labels of -1 (they were never loaded: see
    trainlab/data/target.py), `test` its labelled test split; both normalized as the source is."""

    name: str
    train: DeviceLoader
    test: DeviceLoader
    classes: list[str]


def build_preprocess(preprocess_cfg, train_images, device: torch.device) -> Preprocessor:
    """The `preprocess` option fitted on the training images (mean/std when no option is given)."""
    preprocessor = instantiate(preprocess_cfg, "preprocess") if preprocess_cfg is not None else MeanStd()
    if not isinstance(preprocessor, Preprocessor):
        raise ConfigError(f"preprocess._target_ built a {type(preprocessor).__name__}, not a Preprocessor")
    return preprocessor.fit(train_images).to(device)


def build_mix(mix_cfg, num_classes: int) -> Optional[Mixer]:
    """augmentation.mix (mixup/cutmix settings) as a Mixer, or None when absent."""
    if not mix_cfg:
        return None
    try:
        return Mixer(num_classes, **mix_cfg)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"augmentation.mix: {error}") from None


def build_augmentation(ops_cfg, input_shape: tuple[int, int, int], train_images=None) -> Pipeline:
    """The named ops of augmentation.ops, in order, fitted to the training images (for ops that learn
    from data) and checked against the dataset's image shape."""
    for name, op in (ops_cfg or {}).items():
        if not isinstance(op, Mapping) or "_target_" not in op:
            raise ConfigError(f"augmentation.ops.{name}: no _target_; each op names its class, e.g. "
                              "_target_: trainlab.data.augment.HorizontalFlip")
    pipeline = Pipeline({name: instantiate(op, f"augmentation.ops.{name}") for name, op in (ops_cfg or {}).items()})
    if train_images is not None:
        pipeline.fit(train_images)
    pipeline.check(input_shape)
    return pipeline


NO_VAL = "dataset.val_size=0: best.pt is chosen on the validation split; hold out at least one example"
STATS_SAMPLES = 2048  # images decoded to fit preprocessing and data-driven ops when a dataset streams


def build_data(cfg, device: torch.device, seed: int, channels_last: bool = False) -> DataBundle:
    """Load the dataset named in cfg.dataset, split it, move it to `device` and wrap it in loaders."""
    dataset = load_dataset(cfg.dataset)
    target = None
    if cfg.get("domain") is not None:
        dataset, target = load_domains(cfg, dataset)
    if isinstance(dataset, StreamedDataset):
        return build_streamed(cfg, dataset, device, seed, channels_last)
    train_x, train_y, val_x, val_y = split_train_val(dataset, cfg.dataset.val_size, cfg.dataset.train_size, seed,
                                                     cfg.dataset.get("folds"), cfg.dataset.get("fold", 0))
    if val_y.numel() == 0:
        raise ConfigError(NO_VAL)
    preprocess = build_preprocess(cfg.get("preprocess"), train_x, device)
    augment = build_augmentation(cfg.augmentation.get("ops"), dataset.input_shape, train_x)
    on_device = [t.to(device, non_blocking=True) for t in (train_x, train_y, val_x, val_y,
                                                            dataset.test_images, dataset.test_labels)]
    train_x, train_y, val_x, val_y, test_x, test_y = on_device
    common = dict(normalize=preprocess, channels_last=channels_last)
    trainer = cfg.trainer
    eval_batch = resolve_eval_batch_size(trainer.eval_batch_size, device, dataset.input_shape)
    if target is not None:
        test_labels = target.test_labels.to(device, non_blocking=True)
        target_train = target.train_images.to(device, non_blocking=True)
        # labels of -1: there are none, and a loss fed one by mistake fails (cross_entropy refuses -1)
        unlabelled = torch.full((target_train.shape[0],), -1, dtype=torch.long, device=device)
        target = TargetData(
            target.name,
            # a full batch per step (drop_last): each step sees as many target images as source ones
            train=DeviceLoader(target_train, unlabelled, trainer.batch_size, augment=augment if len(augment) else None,
                               shuffle=True, drop_last=True, seed=seed + 2, **common),
            test=DeviceLoader(target.test_images.to(device, non_blocking=True), test_labels, eval_batch, **common),
            classes=target.classes)
    return DataBundle(
        train=DeviceLoader(train_x, train_y, trainer.batch_size, augment=augment if len(augment) else None,
                           shuffle=True, drop_last=trainer.drop_last, seed=seed + 1, **common),
        val=DeviceLoader(val_x, val_y, eval_batch, **common),
        test=DeviceLoader(test_x, test_y, eval_batch, **common),
        preprocess=preprocess,
        augment=augment,
        mix=build_mix(cfg.augmentation.get("mix"), dataset.num_classes),
        input_shape=dataset.input_shape,
        classes=dataset.classes,
        target=target,
    )


def load_domains(cfg, dataset):
    """The source dataset and the target domain (cfg.domain), both in one image shape (target.common_shape)."""
    from dataclasses import replace

    from trainlab.data.target import DomainSettings, common_shape, conform, conform_dataset, domain_name, load_target

    if isinstance(dataset, StreamedDataset):
        raise ConfigError(f"dataset={cfg.dataset.name}: too large for memory (it would stream); domain adaptation "
                          "keeps both domains in memory: raise dataset.max_memory_mb or use fewer images")
    target = load_target(cfg.domain, cfg.dataset.name, dataset.classes)
    name = domain_name(cfg.domain)
    shape = common_shape(dataset.input_shape, tuple(target.train_images.shape[1:]), DomainSettings.from_cfg(cfg.domain),
                         cfg.dataset.name, name)
    target = replace(target, name=name, train_images=conform(target.train_images, shape),
                     test_images=conform(target.test_images, shape))
    return conform_dataset(dataset, shape), target


def build_streamed(cfg, dataset: StreamedDataset, device: torch.device, seed: int, channels_last: bool) -> DataBundle:
    """The same bundle for a dataset too large for memory: files decoded by DataLoader workers, batch by batch."""
    data_cfg, trainer = cfg.dataset, cfg.trainer
    eval_batch = resolve_eval_batch_size(trainer.eval_batch_size, device, dataset.input_shape)
    train_files, val_files = split_streamed(dataset, data_cfg.val_size, data_cfg.train_size, seed,
                                            data_cfg.get("folds"), data_cfg.get("fold", 0))
    if len(val_files) == 0:
        raise ConfigError(NO_VAL)
    sample = sample_images(train_files, STATS_SAMPLES, seed, dataset.num_workers)
    preprocess = build_preprocess(cfg.get("preprocess"), sample, device)
    augment = build_augmentation(cfg.augmentation.get("ops"), dataset.input_shape, sample)
    common = dict(normalize=preprocess, channels_last=channels_last, device=device, num_workers=dataset.num_workers)
    return DataBundle(
        train=StreamLoader(train_files, trainer.batch_size, augment=augment if len(augment) else None,
                           shuffle=True, drop_last=trainer.drop_last, seed=seed + 1, **common),
        val=StreamLoader(val_files, eval_batch, **common),
        test=StreamLoader(dataset.test, eval_batch, **common),
        preprocess=preprocess,
        augment=augment,
        mix=build_mix(cfg.augmentation.get("mix"), dataset.num_classes),
        input_shape=dataset.input_shape,
        classes=dataset.classes,
        train_sample=sample,
    )
