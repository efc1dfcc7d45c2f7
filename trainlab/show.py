"""`trainlab augment`: a grid of augmented training images, as a PNG and in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from trainlab.data import STATS_SAMPLES, build_augmentation, build_mix, split_train_val
from trainlab.data.datasets import load_dataset
from trainlab.data.stream import StreamedDataset, sample_images, split_streamed
from trainlab.errors import ConfigError
from trainlab.run import resolve_device


def grid_rows(originals: torch.Tensor, pipeline, mix, versions: int, generator: torch.Generator) -> torch.Tensor:
    """[images * (versions + 1), C, H, W] uint8: each original followed by `versions` augmented draws."""
    columns = [originals]
    for _ in range(versions):
        augmented = pipeline(originals, generator)
        if mix is not None:  # mixing works on float; show the mixed pixels back on the uint8 scale
            mixed, _ = mix(augmented.float(), torch.zeros(len(augmented), dtype=torch.long,
                                                          device=augmented.device), generator)
            augmented = mixed.round().clamp(0, 255).to(torch.uint8)
        columns.append(augmented)
    return torch.stack(columns, dim=1).flatten(0, 1)


def augment_grid(cfg: DictConfig, run_dir: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.utils import make_grid, save_image

    grid_cfg = cfg.get("grid") or {}
    images, versions = int(grid_cfg.get("images", 8)), int(grid_cfg.get("versions", 7))
    if images < 1 or versions < 1:
        raise ConfigError(f"grid.images={images}, grid.versions={versions}: both must be >= 1")
    device = resolve_device(cfg.trainer.device)
    torch.manual_seed(cfg.seed)
    dataset = load_dataset(cfg.dataset)
    split = (cfg.dataset.val_size, cfg.dataset.train_size, cfg.seed, cfg.dataset.get("folds"), cfg.dataset.get("fold", 0))
    if isinstance(dataset, StreamedDataset):  # too large for memory: decode just a sample of the training files
        train_x = sample_images(split_streamed(dataset, *split)[0], STATS_SAMPLES, cfg.seed, dataset.num_workers)
    else:
        train_x = split_train_val(dataset, *split)[0]
    pipeline = build_augmentation(cfg.augmentation.get("ops"), dataset.input_shape, train_x)
    mix = build_mix(cfg.augmentation.get("mix"), dataset.num_classes)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    pick = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:images]
    tiles = grid_rows(train_x[pick].to(device), pipeline, mix, versions, generator).cpu()

    upscale = grid_cfg.get("upscale", "auto")
    factor = max(1, 64 // tiles.shape[-1]) if str(upscale) == "auto" else int(upscale)
    if factor > 1:  # nearest: every pixel stays visible as it is
        tiles = tiles.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    grid = make_grid(tiles.float() / 255.0, nrow=versions + 1, padding=2, pad_value=1.0)
    path = run_dir / "augment.png"
    save_image(grid, path)
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        writer.add_image("augment/grid", grid, 0)
        writer.add_text("augment/pipeline", f"{pipeline!r}" + (f" + {mix!r}" if mix else ""), 0)
    print(f"{len(pick)} training images x {versions} augmented draws ({pipeline!r}"
          + (f" + {mix!r}" if mix else "") + f")\nwrote {path}")
    return path
