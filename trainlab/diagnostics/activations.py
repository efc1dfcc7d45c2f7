"""What a forward pass does to the signal, layer after layer: each layer's output mean, std, dead units
and saturated outputs (the statistics behind the classic initialization figures).

Layers are the outputs of the model's activation modules (`activation_layers`), in the order the forward
pass calls them; a model without any nonlinearity (model.activation=identity) is measured at the outputs of
its Linear/Conv layers instead, its classifier (`model.head`) left out. A module called several times in
one forward pass (a shared nn.ReLU, as in torchvision's ResNets) gives one layer per call.

Per layer, over every output value of the batch:
  mean, std (population std), min, max;
  dead       (kind relu: the ReLU family) the fraction of units that are never positive on the batch; a
             unit is a feature of a dense layer or a channel of a feature map (dim 1). Else None.
  saturated  (kind tanh / sigmoid) the fraction of outputs within `margin` of a bound of the activation
             (tanh: |y| > 1 - margin; sigmoid: y < margin or y > 1 - margin). Else None.

`ActivationRecorder` computes these in forward hooks as device tensors (no host sync in the forward pass),
so a training callback can record at its interval and read once; `read()` makes the one host transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from trainlab.models.layers import Maxout

KINDS = ("relu", "tanh", "sigmoid", "other")
# The ReLU family: units that can die (never positive, so no gradient or only a leak passes back).
RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Hardswish)
TANH_LIKE = (nn.Tanh, nn.Hardtanh)         # bounded by -1, 1 (Hardtanh: its min_val, max_val)
SIGMOID_LIKE = (nn.Sigmoid, nn.Hardsigmoid)  # bounded by 0, 1
OTHER_ACTIVATIONS = (Maxout, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid)
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
STATS = ("mean", "std", "min", "max", "dead", "saturated")


def activation_kind(module: nn.Module) -> Optional[str]:
    """relu | tanh | sigmoid | other for an activation module, None for anything else (ReLU6 is relu)."""
    if isinstance(module, RELU_FAMILY):
        return "relu"
    if isinstance(module, TANH_LIKE):
        return "tanh"
    if isinstance(module, SIGMOID_LIKE):
        return "sigmoid"
    if isinstance(module, OTHER_ACTIVATIONS):
        return "other"
    return None


def bounds(module: nn.Module, kind: str) -> Optional[tuple[float, float]]:
    """The output range a saturating activation approaches: tanh (-1, 1), sigmoid (0, 1)."""
    if kind == "tanh":
        if isinstance(module, nn.Hardtanh):
            return float(module.min_val), float(module.max_val)
        return -1.0, 1.0
    if kind == "sigmoid":
        return 0.0, 1.0
    return None


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of every activation module of `model`, in registration order (for sequential
    models the forward order; the recorder reports the order of the calls). A model without one (only
    nn.Identity where the activation goes) gives its Linear/Conv layers, kind `other`, the head left out."""
    found = [(name, module, kind) for name, module in model.named_modules()
             if (kind := activation_kind(module)) is not None]
    if found:
        return found
    return [(name, module, "other") for name, module in model.named_modules()
            if isinstance(module, LINEAR_LAYERS) and not _under(name, "head")]


@dataclass
class Record:
    """One layer call of the last forward pass: its label and its statistics still on the device."""

    name: str
    kind: str
    module: str
    shape: tuple[int, ...]
    stats: torch.Tensor                  # [len(STATS)] float32 on the layer's device; NaN where undefined
    sample: Optional[torch.Tensor] = None  # kept outputs (flattened), when keep_outputs


def layer_stats(output: torch.Tensor, kind: str, limits: Optional[tuple[float, float]], margin: float) -> torch.Tensor:
    """[mean, std, min, max, dead, saturated] of one layer's output as one device tensor (no host sync)."""
    y = output.detach().float()
    nan = torch.full((), math.nan, device=y.device)
    dead = nan
    if kind == "relu":
        units = 1 if y.dim() >= 2 else 0  # features of a dense layer, channels of a feature map
        others = [d for d in range(y.dim()) if d != units]
        positive = (y > 0).sum(dim=others) if others else (y > 0).float()
        dead = (positive == 0).float().mean()
    saturated = nan
    if limits is not None:
        low, high = limits
        saturated = ((y < low + margin) | (y > high - margin)).float().mean()
    return torch.stack([y.mean(), y.std(correction=0), y.amin(), y.amax(), dead, saturated])


class ActivationRecorder:
    """Forward hooks on a model's activation layers while the context is open (removed on exit).

        with ActivationRecorder(model, keep_outputs=True) as recorder:
            model(batch)
        rows = recorder.read()        # [{name, kind, module, shape, mean, std, min, max, dead, saturated}]
        samples = recorder.outputs()  # [(name, 1-d CPU tensor of kept outputs)]

    Each forward pass of `model` starts the records afresh: read() describes the last one. In the hooks
    the statistics stay on the device; nothing calls .item(). `keep_outputs` keeps up to `sample` output
    values per layer (a random draw from the recorder's own generator when a layer has more; the global
    RNG is not touched) for histograms. `layers`: (name, module, kind) triples, activation_layers(model)
    by default. `margin`: see the module note (saturated).
    """

    def __init__(self, model: nn.Module, layers: Optional[list[tuple[str, nn.Module, str]]] = None, *,
                 keep_outputs: bool = False, sample: int = 100_000, margin: float = 0.01, seed: int = 0):
        if sample < 1:
            raise ValueError(f"sample={sample}: must be >= 1")
        self.model = model
        self.layers = activation_layers(model) if layers is None else list(layers)
        self.keep_outputs, self.sample, self.margin, self.seed = keep_outputs, sample, margin, seed
        self.records: list[Record] = []
        self._handles: list = []
        self._generators: dict[torch.device, torch.Generator] = {}

    def __enter__(self) -> "ActivationRecorder":
        self._handles.append(self.model.register_forward_pre_hook(self._start))
        for name, module, kind in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name, kind, bounds(module, kind))))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start(self, module, inputs) -> None:
        self.records = []

    def _hook(self, name: str, kind: str, limits: Optional[tuple[float, float]]):
        def record(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            kept = self._keep(output) if self.keep_outputs else None
            self.records.append(Record(name, kind, type(module).__name__, tuple(output.shape),
                                       layer_stats(output, kind, limits, self.margin), kept))
        return record

    def _keep(self, output: torch.Tensor) -> torch.Tensor:
        flat = output.detach().reshape(-1)
        if flat.numel() <= self.sample:
            return flat.float().clone()
        generator = self._generators.get(flat.device)
        if generator is None:
            generator = self._generators[flat.device] = torch.Generator(device=flat.device).manual_seed(self.seed)
        pick = torch.randint(flat.numel(), (self.sample,), generator=generator, device=flat.device)
        return flat[pick].float()

    def labels(self) -> list[str]:
        """The records' layer names; a module called k > 1 times in the pass is `name (1)` ... `name (k)`."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.name] = counts.get(record.name, 0) + 1
        seen: dict[str, int] = {}
        labels = []
        for record in self.records:
            seen[record.name] = seen.get(record.name, 0) + 1
            labels.append(record.name if counts[record.name] == 1 else f"{record.name} ({seen[record.name]})")
        return labels

    def read(self) -> list[dict]:
        """The last forward pass's statistics as plain Python values, one dict per layer call in forward
        order (see the module note); one host transfer for all layers."""
        if not self.records:
            return []
        device = self.records[0].stats.device
        values = torch.stack([r.stats.to(device) for r in self.records]).cpu().tolist()
        rows = []
        for index, (label, record, row) in enumerate(zip(self.labels(), self.records, values), start=1):
            stats = {key: (None if math.isnan(value) and key in ("dead", "saturated") else value)
                     for key, value in zip(STATS, row)}
            rows.append({"index": index, "name": label, "kind": record.kind, "module": record.module,
                         "shape": list(record.shape), **stats})
        return rows

    def outputs(self) -> list[tuple[str, torch.Tensor]]:
        """(name, kept outputs as a 1-d CPU float tensor) per layer call; empty unless keep_outputs."""
        kept = [(label, r.sample) for label, r in zip(self.labels(), self.records) if r.sample is not None]
        if not kept:
            return []
        device = kept[0][1].device
        flat = torch.cat([s.to(device) for _, s in kept]).cpu()  # one transfer
        pieces = flat.split([s.numel() for _, s in kept])
        return [(label, piece) for (label, _), piece in zip(kept, pieces)]


@torch.no_grad()
def measure(model: nn.Module, batch: torch.Tensor, *, keep_outputs: bool = False, sample: int = 100_000,
            margin: float = 0.01, train_mode: bool = True) -> tuple[list[dict], list[tuple[str, torch.Tensor]]]:
    """Forward `batch` once through `model` (in train or eval mode, restored afterwards) and return
    (ActivationRecorder.read(), ActivationRecorder.outputs())."""
    was_training = model.training
    model.train(train_mode)
    try:
        with ActivationRecorder(model, keep_outputs=keep_outputs, sample=sample, margin=margin) as recorder:
            model(batch)
    finally:
        model.train(was_training)
    return recorder.read(), recorder.outputs()
