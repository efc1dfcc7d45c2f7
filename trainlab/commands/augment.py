"""`trainlab augment`: a grid of augmented training images, as a PNG and in TensorBoard."""

from __future__ import annotations

from pathlib import Path

CONFIG = "augment"


def check(cfg, context) -> None:
    from trainlab.errors import ConfigError

    grid = cfg.get("grid") or {}
    for key, default in (("images", 8), ("versions", 7)):
        value = grid.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"grid.{key}={value!r}: must be a whole number >= 1")


def grid_rows(originals, pipeline, mix, versions: int, generator):
    """[images * (versions + 1), C, H, W] uint8: each original followed by `versions` augmented draws."""
    import torch

    columns = [originals]
    for _ in range(versions):
        augmented = pipeline(originals, generator)
        if mix is not None:  # mixing works on float; show the mixed pixels back on the uint8 scale
            mixed, _ = mix(augmented.float(), torch.zeros(len(augmented), dtype=torch.long,
                                                          device=augmented.device), generator)
            augmented = mixed.round().clamp(0, 255).to(torch.uint8)
        columns.append(augmented)
    return torch.stack(columns, dim=1).flatten(0, 1)


def run(cfg, run_dir: Path) -> Path:
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.utils import make_grid, save_image

    from trainlab.build import loaders
    from trainlab.runtime import resolve_device, seed_everything

    grid_cfg = cfg.get("grid") or {}
    images, versions = int(grid_cfg.get("images", 8)), int(grid_cfg.get("versions", 7))
    device = resolve_device(cfg.trainer.device)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    data = loaders(cfg, device, channels_last=False)  # the very data and pipeline `trainlab train` builds
    train_x = data.training_images()
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    pick = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:images]
    tiles = grid_rows(train_x[pick.to(train_x.device)].to(device), data.augment, data.mix, versions, generator).cpu()

    upscale = grid_cfg.get("upscale", "auto")
    factor = max(1, 64 // tiles.shape[-1]) if str(upscale) == "auto" else int(upscale)
    if factor > 1:  # nearest: every pixel stays visible as it is
        tiles = tiles.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    grid = make_grid(tiles.float() / 255.0, nrow=versions + 1, padding=2, pad_value=1.0)
    path = run_dir / "augment.png"
    save_image(grid, path)
    described = f"{data.augment!r}" + (f" + {data.mix!r}" if data.mix else "")
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        writer.add_image("augment/grid", grid, 0)
        writer.add_text("augment/pipeline", described, 0)
    print(f"{len(pick)} training images x {versions} augmented draws ({described})\nwrote {path}")
    return path
