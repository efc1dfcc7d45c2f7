"""Batched geometric warps with one transform per sample (the primitive behind affine-type ops).

torchvision's functional affine takes one set of parameters per call; applying it image by image
costs a Python loop per sample. affine_grid + grid_sample take a [N, 2, 3] matrix batch instead,
so a batch of differently rotated/sheared/translated images is two kernel calls.
"""

from __future__ import annotations



import torch
import torch.nn.functional as F


def affine_matrices(
    angle_deg: torch.Tensor,
    translate: torch.Tensor,
    scale: torch.Tensor,
    shear_deg: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Per-sample forward affine maps in pixel units about the image centre, as [N, 3, 3].

    angle_deg [N]: rotation in degrees (sign as torchvision's affine); translate [N, 2]: (dx, dy) in
    pixels; scale [N]; shear_deg [N, 2]: (x, y) shear angles. Composition: T * C * R * S * SHy * SHx * C^-1.
    """
    h, w = size
    n = angle_deg.shape[0]
    device = angle_deg.device
    rot = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # torchvision's convention (so magnitudes mean the same): R(a) * S(s) * SHy(sy) * SHx(sx)
    rotation = torch.eye(3, device=device).repeat(n, 1, 1)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    shear_x = torch.eye(3, device=device).repeat(n, 1, 1)
    shear_x[:, 0, 1] = -torch.tan(torch.deg2rad(shear_deg[:, 0]))
    shear_y = torch.eye(3, device=device).repeat(n, 1, 1)
    shear_y[:, 1, 0] = -torch.tan(torch.deg2rad(shear_deg[:, 1]))
    scaling = torch.eye(3, device=device).repeat(n, 1, 1)
    scaling[:, 0, 0] = scaling[:, 1, 1] = scale
    centre = torch.eye(3, device=device).repeat(n, 1, 1)
    centre[:, 0, 2], centre[:, 1, 2] = (w - 1) / 2, (h - 1) / 2
    uncentre = torch.eye(3, device=device).repeat(n, 1, 1)
    uncentre[:, 0, 2], uncentre[:, 1, 2] = -(w - 1) / 2, -(h - 1) / 2
    shift = torch.eye(3, device=device).repeat(n, 1, 1)
    shift[:, 0, 2], shift[:, 1, 2] = translate[:, 0], translate[:, 1]
    return shift @ centre @ rotation @ scaling @ shear_y @ shear_x @ uncentre


def warp_affine(images: torch.Tensor, forward: torch.Tensor, fill: float = 0.0,
                mode: str = "bilinear") -> torch.Tensor:
    """Warp uint8 images [N, C, H, W] by per-sample forward pixel maps [N, 3, 3]; returns uint8.

    Output pixel p takes the input at forward^-1 p (inverse mapping, as every image warp does);
    pixels that come from outside the image get `fill` (0-255). With mode="nearest", a source point
    exactly halfway between two pixels may round to the other neighbour than torchvision's does.
    """
    n, c, h, w = images.shape
    # inv_ex: torch.linalg.inv checks for singular matrices, which makes the CPU wait for the GPU
    inverse = torch.linalg.inv_ex(forward.float()).inverse
    # pixel coordinates <-> normalized [-1, 1] (align_corners=True: -1 and 1 are the edge pixel centres)
    sx, sy = 2 / max(w - 1, 1), 2 / max(h - 1, 1)
    to_norm = torch.tensor([[sx, 0, -1], [0, sy, -1], [0, 0, 1]], device=images.device)
    from_norm = torch.tensor([[1 / sx, 0, 1 / sx], [0, 1 / sy, 1 / sy], [0, 0, 1]], device=images.device)
    theta = (to_norm @ inverse @ from_norm)[:, :2, :]
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=True)
    # sample an extra all-ones channel to know which output pixels came from outside the image
    source = torch.cat([images.float(), torch.ones(n, 1, h, w, device=images.device)], dim=1)
    warped = F.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=True)
    inside = warped[:, -1:]
    out = warped[:, :-1] + (1 - inside) * fill
    return out.round_().clamp_(0, 255).to(torch.uint8)


def identity_matrices(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)
