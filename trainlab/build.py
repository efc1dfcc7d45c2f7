"""Config -> built pieces: the one place that builds, shared by every command.

`check(cfg)` is the honest check of a whole config before anything is read or written: a dry build of
each piece (the model on the `meta` device with a dummy input of the dataset's known shape, the
optimizer and schedule on that model, the augmentation ops on an image of that shape, the callbacks).
`build_experiment(cfg)` builds the real pieces (data on the device, the initialized model, optimizer,
schedule) with no side effects on disk; `build_callbacks` and `build_trainer` put a run together.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.callbacks.base import Callback, RunInfo
from trainlab.checks import KeyProblem
from trainlab.config import effective_monitor, instantiate
from trainlab.data import DataBundle, build_augmentation, build_data, build_mix
from trainlab.data.datasets import DatasetShape, check_files, describe
from trainlab.data.preprocess import Preprocessor
from trainlab.data.splits import val_count
from trainlab import distributed
from trainlab.errors import MODEL_ADVICE, ConfigError
from trainlab.init import apply_init, check_init, needs_batch
from trainlab.models import build_model, count_parameters
from trainlab.optim import build_optimizer, build_schedule
from trainlab.regularization import build_penalty
from trainlab.runtime import (compile_model, resolve_amp, resolve_channels_last, resolve_compile, resolve_device,
                              seed_everything)
from trainlab.train import StepSettings, Trainer
from trainlab.transfer import freeze, resolve_pretrained_path, setup_transfer, split_model_config
from trainlab.tta import build_views


@dataclass
class Experiment:
    """The built pieces of one experiment, before any training."""

    cfg: DictConfig
    device: torch.device
    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    amp_dtype: Optional[torch.dtype]
    forward: Optional[Callable]         # torch.compile(model), or None for eager
    penalty: Optional[Callable]
    tta_views: Optional[Callable]
    params: int
    init_report: dict
    transfer: dict
    notices: list[str] = field(default_factory=list)
    channels_last: bool = False
    adaptation: Optional[Any] = None    # trainlab.adaptation.dann.DANN with adaptation=dann

    @property
    def runtime(self) -> dict:
        """How the `auto` trainer settings resolved on this device (summary.json's `runtime`)."""
        return {"channels_last": self.channels_last, "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype
                else None, "compiled": self.forward is not None, "eval_batch_size": self.data.val.batch_size,
                "threads": torch.get_num_threads()}

    @property
    def monitor(self) -> str:
        return effective_monitor(self.cfg.trainer, self.cfg.callbacks)


# ---------------------------------------------------------------- the pieces


def loaders(cfg: DictConfig, device: torch.device, channels_last: bool) -> DataBundle:
    """build_data, with trainer.batch_size=full resolved to the training split's size (one batch per epoch)."""
    if cfg.trainer.batch_size != "full":
        return build_data(cfg, device, cfg.seed, channels_last=channels_last)
    data_cfg = copy.deepcopy(cfg)
    data_cfg.trainer.batch_size = 2**62  # "every example": the split's size is known once the data is built
    data = build_data(data_cfg, device, cfg.seed, channels_last=channels_last)
    data.train.batch_size = max(1, data.train.num_samples)
    return data


def model_activation(cfg: DictConfig) -> tuple[str, Any]:
    return cfg.model.get("activation", "relu"), cfg.model.get("activation_params")


def initialize_weights(model: nn.Module, cfg: DictConfig, train_loader) -> dict:
    """The `init` option, with gains that follow model.activation; LSUV and a model's `init_from_data` get one
    real training batch."""
    activation, params = model_activation(cfg)
    batch = None
    data_init = getattr(model, "init_from_data", None)  # a model with data-dependent set-up (airbench's whitening)
    if needs_batch(cfg.init) or data_init is not None:
        state = train_loader.rng_state()  # borrowing a batch must not change the run's shuffling
        batch, _ = next(iter(train_loader))
        train_loader.set_rng_state(state)
    report = apply_init(model, cfg.init, activation=activation, activation_params=params, batch=batch)
    if data_init is not None:
        data_init(batch)
        report["init_from_data"] = True
    return report


def schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The `schedule` option over trainer.epochs of steps_per_epoch optimizer steps."""
    return build_schedule(cfg.schedule, optimizer, steps_per_epoch, cfg.trainer.epochs, mode=cfg.trainer.mode)


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    return model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)


def build_experiment(cfg: DictConfig, *, resuming: bool = False) -> Experiment:
    """Every piece of the experiment `cfg` (validated) describes; `resuming`: weights come from last.pt
    later, so model.pretrained is not read."""
    trainer = cfg.trainer
    world = distributed.current()
    device = distributed.rank_device(resolve_device(trainer.device), world)
    seed_everything(cfg.seed, trainer.deterministic)
    channels_last = resolve_channels_last(trainer.channels_last, device)
    data = loaders(cfg, device, channels_last)
    if world.active:  # each rank its part of every batch (the model starts alike: DDP broadcasts rank 0's)
        targets = (data.target.train, data.target.test) if data.target is not None else ()
        for loader in (data.train, data.val, data.test, *targets):
            loader.shard(world.rank, world.size, cfg.seed)
    model = to_device(build_model(cfg.model, data.input_shape, data.num_classes), device, channels_last)
    init_report = initialize_weights(model, cfg, data.train)
    params = count_parameters(model)  # before freezing: frozen batch norm keeps its weights as buffers
    _, transfer_settings = split_model_config(cfg.model)
    transfer = setup_transfer(model, transfer_settings, load_weights=not resuming, classes=data.classes)
    model = to_device(model, device, channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    # the schedule counts optimizer steps: one per `accumulate` micro-batches, the last partial group included
    steps_per_epoch = math.ceil(len(data.train) / trainer.accumulate)
    adaptation = build_adaptation(cfg, model, data, optimizer, steps_per_epoch * trainer.epochs, channels_last)
    scheduler = schedule(cfg, optimizer, steps_per_epoch)
    amp_dtype, notices = resolve_amp(trainer.amp, trainer.amp_dtype, device)
    forward, compile_notices = compile_model(model, resolve_compile(trainer.compile, device))
    return Experiment(cfg=cfg, device=device, data=data, model=model, optimizer=optimizer, scheduler=scheduler,
                      steps_per_epoch=steps_per_epoch, amp_dtype=amp_dtype, forward=forward,
                      penalty=build_penalty(model, trainer.l1, trainer.l2),
                      tta_views=build_views(**cfg.tta) if cfg.get("tta") else None, params=params,
                      init_report=init_report, transfer=transfer, notices=notices + compile_notices,
                      channels_last=channels_last, adaptation=adaptation)


def domain_classifier(cfg: DictConfig, model: nn.Module):
    """adaptation=dann's domain classifier for `model`'s features (the input of its head)."""
    from trainlab.adaptation.dann import DomainClassifier, feature_width

    try:
        width = feature_width(model)
    except ValueError as error:
        raise ConfigError(f"adaptation=dann with model={cfg.model.get('name', '?')}: {error}; use a model with a "
                          "feature extractor and a linear head (cnn, resnet*, wrn, vgg, torchvision)") from None
    settings = cfg.adaptation
    return DomainClassifier(width, list(settings.hidden), settings.dropout)


def build_adaptation(cfg: DictConfig, model: nn.Module, data: DataBundle, optimizer, total_steps: int,
                     channels_last: bool):
    """adaptation=dann: its domain classifier (trained by the run's optimizer, in a parameter group of its own,
    `domain_classifier`) and the step that feeds it; None for adaptation=none."""
    settings = cfg.get("adaptation")
    if settings is None or settings.method != "dann":
        return None
    from trainlab.adaptation.dann import DANN

    classifier = domain_classifier(cfg, model).to(next(model.parameters()).device)
    optimizer.add_param_group({"params": list(classifier.parameters()), "name": "domain_classifier"})
    return DANN(model, classifier, data.target.train, total_steps, weight=settings.weight,
                lambda_schedule=settings.lambda_schedule, gamma=settings.gamma, lambda_max=settings.lambda_max)


def build_callbacks(cfg: DictConfig, run: RunInfo) -> dict[str, Callback]:
    """The `callbacks` named dict, built and set up for `run`; a callback that is off (ema with decay null,
    early stopping with patience null) is left out."""
    built: dict[str, Callback] = {}
    world = distributed.current()
    for name, node in cfg.callbacks.items():
        try:
            callback = instantiate(node, f"callbacks.{name}")
        except KeyProblem as problem:
            raise problem.at(f"callbacks.{name}") from None
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks.{name}._target_={node._target_}: built a {type(callback).__name__}, "
                              "not a trainlab.callbacks.Callback")
        if not (world.main or callback.every_rank):  # rank 0 alone writes and prints
            continue
        if getattr(callback, "enabled", True):
            callback.setup(run)
            built[name] = callback
    ema = next((cb for cb in built.values() if type(cb).__name__ == "EMA"), None)
    if ema is not None and run.monitor.startswith("val_ema/"):
        for callback in built.values():
            if hasattr(callback, "best_weights"):
                callback.best_weights = ema.weights  # best.pt holds the weights its metric scored
    return built


def data_parallel(experiment: Experiment) -> Optional[nn.Module]:
    """The model as DistributedDataParallel for this rank's training steps (batch norm synchronised across
    the ranks with trainer.sync_bn; compiled as trainer.compile resolved), or None in a world of one."""
    world = distributed.current()
    if not world.active:
        return None
    from torch.nn.parallel import DistributedDataParallel

    model = experiment.model
    if experiment.adaptation is not None:  # DDP all-reduces the domain classifier's gradients too
        from trainlab.adaptation.dann import Adversarial

        model = Adversarial(model, experiment.adaptation.classifier)
    if experiment.cfg.trainer.get("sync_bn"):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the same parameters: the optimizer's
    cuda = experiment.device.type == "cuda"
    wrapped = DistributedDataParallel(model, device_ids=[experiment.device.index] if cuda else None)
    return torch.compile(wrapped) if experiment.forward is not None else wrapped


def build_trainer(experiment: Experiment, callbacks: dict[str, Callback]) -> Trainer:
    trainer = experiment.cfg.trainer
    steps = StepSettings(label_smoothing=trainer.label_smoothing, accumulate=trainer.accumulate,
                         clip_grad_norm=trainer.clip_grad_norm, clip_grad_value=trainer.clip_grad_value,
                         skip_nonfinite=trainer.skip_nonfinite)
    return Trainer(experiment.model, experiment.optimizer, experiment.scheduler, experiment.device, steps=steps,
                   amp_dtype=experiment.amp_dtype, log_every=trainer.log_every, monitor=experiment.monitor,
                   forward=experiment.forward, mix=experiment.data.mix, penalty=experiment.penalty,
                   callbacks=callbacks, checkpoint_every_steps=trainer.checkpoint_every_steps,
                   world=distributed.current(), train_forward=data_parallel(experiment),
                   adaptation=experiment.adaptation)


# ---------------------------------------------------------------- the check before anything is touched


def estimated_steps_per_epoch(cfg: DictConfig, shape: DatasetShape) -> int:
    """Optimizer steps per epoch as the dataset's known size gives them (100 when the size is unknown):
    enough for the schedule's dry build, whose rules are in epochs. A validation size that leaves no
    training examples fails here, before any file is read."""
    data, trainer = cfg.dataset, cfg.trainer
    if shape.train_examples is None:
        return 100
    total = shape.train_examples
    if data.folds:
        train = total - total // data.folds
    else:
        train = total - val_count(data.val_size, total)  # a size the split cannot give fails here already
    if data.train_size is not None:
        train = min(train, data.train_size)
    batches = 1 if trainer.batch_size == "full" else math.ceil(train / trainer.batch_size)
    return max(1, math.ceil(batches / trainer.accumulate))


def dry_model(cfg: DictConfig, shape: DatasetShape) -> nn.Module:
    """The model built on the `meta` device (no memory, no weights) and run on a dummy batch of the dataset's
    shape, so a model that does not fit the images fails here; frozen as model.freeze says."""
    _, transfer = split_model_config(cfg.model)
    if transfer["pretrained"]:
        resolve_pretrained_path(transfer["pretrained"])  # exists (its tensors are checked when loaded)
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, shape.input_shape, shape.num_classes)
            model.eval()(torch.empty(2, *shape.input_shape))
    except NotImplementedError:  # an op without a meta kernel: the same check on the CPU
        model = build_model(cfg.model, shape.input_shape, shape.num_classes)
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape.input_shape))
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"model: does not run on {list(shape.input_shape)} images ({cfg.dataset.name}): "
                          f"{first}; check the model's keys against the dataset") from None
    freeze(model, transfer["freeze"], freeze_bn=transfer["freeze_bn"])
    return model.train()


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes free for tensors on `device` now (None when unknown, e.g. MPS)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(model: nn.Module, device: torch.device) -> None:
    """A model whose weights and gradients alone exceed the memory free on the device fails here, before
    the run folder is made (the dry build is on the meta device, which allocates nothing)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    free = free_memory(device)
    if free is not None and 2 * weights > free:
        count = sum(p.numel() for p in model.parameters())
        raise ConfigError(f"model: {count:,} parameters need {2 * weights / 2**30:.1f} GiB for weights and "
                          f"gradients alone, more than the {free / 2**30:.1f} GiB free on {device}; {MODEL_ADVICE}")


def check_devices(trainer: DictConfig, device: torch.device) -> None:
    """trainer.devices and trainer.sync_bn against the machine: one GPU per process on CUDA; SyncBatchNorm
    only on CUDA (torch's kernels for it are CUDA ones)."""
    devices = trainer.get("devices", 1)
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices={devices}: this machine has {torch.cuda.device_count()} CUDA devices "
                          f"(one process per GPU); use trainer.devices={torch.cuda.device_count()} or fewer")
    if device.type == "mps" and devices > 1:
        raise ConfigError(f"trainer.devices={devices} on mps: torch.distributed has no MPS backend; use "
                          "trainer.devices=1, or trainer.device=cpu for several CPU processes")
    if trainer.get("sync_bn") and device.type != "cuda":
        raise ConfigError(f"trainer.sync_bn=true on {device.type}: SyncBatchNorm runs on CUDA only; use "
                          "trainer.sync_bn=false (each process normalises over its part of the batch)")


def check_domain(cfg: DictConfig, shape: DatasetShape) -> DatasetShape:
    """The target domain's keys and files, and the one image shape both domains take (ConfigError naming both
    when they cannot share one: channel counts other than grey/RGB, different numbers of classes)."""
    from dataclasses import replace

    from trainlab.data.target import DomainSettings, common_shape, domain_name, domain_shape, in_domain

    settings = DomainSettings.from_cfg(cfg.domain)
    target_shape, target_classes, _ = domain_shape(cfg.domain)
    try:
        check_files(cfg.domain.data)
    except ConfigError as error:
        raise in_domain(error) from None
    folders = "imagefolder" in (cfg.dataset.name, cfg.domain.data.name)  # class counts known once scanned
    if not folders and target_classes != shape.num_classes:
        raise ConfigError(f"dataset={cfg.dataset.name} has {shape.num_classes} classes but domain.data="
                          f"{cfg.domain.data.name} has {target_classes}: the two domains must share one label set")
    common = common_shape(shape.input_shape, target_shape, settings, cfg.dataset.name, domain_name(cfg.domain))
    return replace(shape, input_shape=common)


def check(cfg: DictConfig) -> DictConfig:
    """Dry-build every piece of a schema-validated config (see the module note); raise ConfigError naming
    the key of the first piece that cannot be built. Reads no dataset file and writes nothing."""
    device = resolve_device(cfg.trainer.device)
    check_devices(cfg.trainer, device)
    shape = describe(cfg.dataset)
    check_files(cfg.dataset)
    if cfg.get("domain") is not None:
        shape = check_domain(cfg, shape)
    activation, params = model_activation(cfg)
    check_init(cfg.init, activation, params)
    model = dry_model(cfg, shape)
    if cfg.get("adaptation") is not None and cfg.adaptation.method == "dann":
        with torch.device("meta"):
            domain_classifier(cfg, model)
    check_memory(model, device)
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule(cfg, optimizer, estimated_steps_per_epoch(cfg, shape))
    preprocessor = instantiate(cfg.get("preprocess"), "preprocess") if cfg.get("preprocess") is not None else None
    if preprocessor is not None and not isinstance(preprocessor, Preprocessor):
        raise ConfigError(f"preprocess._target_ built a {type(preprocessor).__name__}, not a Preprocessor")
    images = torch.randint(0, 256, (64, *shape.input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    build_augmentation(cfg.augmentation.get("ops"), shape.input_shape, images)
    build_mix(cfg.augmentation.get("mix"), shape.num_classes)
    if cfg.get("tta"):
        build_views(**cfg.tta)
    monitor = effective_monitor(cfg.trainer, cfg.callbacks)
    build_callbacks(cfg, RunInfo(run_dir=None, monitor=monitor, mode=cfg.trainer.mode,
                                 config=OmegaConf.to_container(cfg, resolve=True)))  # e.g. snapshots read the schedule
    return cfg

