"""Where and how a run computes: the device, seeding, mixed precision and torch.compile.

Each helper returns what it decided plus, where a setting cannot apply here, a one-line notice for the
console (the caller decides where notices go), so nothing here prints.
"""

from __future__ import annotations

import math
import os
import random
from typing import Callable, Optional

import numpy as np
import torch

from trainlab.config import switch
from trainlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """auto: cuda > mps > cpu. An explicit device that is not there is an error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: CUDA is not available here; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps: MPS is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # all devices
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: the jobs of a sweep share one process
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


# What each `auto` of the trainer resolves to, per device type, as benchmarks/auto_choices.py measured it
# (its figures are in README's Performance section). CPU (oneDNN): NHWC convolutions train 1.4x faster;
# evaluation is fastest at batch 256 (7.4k/s against 5.3k/s at 1024, the cache); torch.compile gains
# nothing on these small nets and costs start-up; bf16 autocast trains 1.7-1.85x faster where the CPU
# has bf16 instructions (AVX512-BF16 or AMX), at the same accuracy over 3 seeds, and is many times slower
# where it has not (emulated), so auto asks the CPU. CUDA: NHWC + bf16 tensor cores; compile pays back
# over any run longer than a minute. MPS: left as torch's defaults (nothing measured there).
AUTO_CHANNELS_LAST = {"cuda": True, "cpu": True}
AUTO_AMP = {"cuda": True}  # and CPUs where cpu_has_bf16(): auto_amp
AUTO_COMPILE = {"cuda": True}
AUTO_EVAL_BATCH_SIZE = {"cuda": 2048, "cpu": 256}
DEFAULT_EVAL_BATCH_SIZE = 256


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX tiles): oneDNN's bf16 kernels are
    fast there and emulated (slow) elsewhere. torch.cpu's probes are private, hence the guard."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(probe() for probe in probes if probe is not None)
    except Exception:  # a probe that breaks on some platform: assume no bf16 (fp32 is always right)
        return False


def resolve_channels_last(setting: str, device: torch.device) -> bool:
    """trainer.channels_last: auto means where NHWC convolutions measured faster (CUDA, CPU)."""
    return switch(setting, auto=AUTO_CHANNELS_LAST.get(device.type, False))


def resolve_compile(setting, device: torch.device) -> bool:
    """trainer.compile: auto means on CUDA (on the CPU, compiling costs more than a short run gains)."""
    return switch(setting, auto=AUTO_COMPILE.get(device.type, False))


EVAL_BATCH_VALUES = 2**25  # auto keeps an evaluation batch under 128 MiB of fp32 input (large images)


def resolve_eval_batch_size(setting, device: torch.device, input_shape=None) -> int:
    """trainer.eval_batch_size: auto is the size that evaluated fastest on this device type, fewer images
    for large ones (input_shape C, H, W) so one batch's input stays under EVAL_BATCH_VALUES values."""
    if setting != "auto":
        return int(setting)
    size = AUTO_EVAL_BATCH_SIZE.get(device.type, DEFAULT_EVAL_BATCH_SIZE)
    if input_shape is not None:
        size = min(size, max(32, EVAL_BATCH_VALUES // math.prod(input_shape)))
    return size


def auto_amp(device: torch.device) -> bool:
    """Where bf16 autocast measured faster: CUDA, and CPUs with bf16 instructions."""
    return AUTO_AMP.get(device.type, False) or (device.type == "cpu" and cpu_has_bf16())


def resolve_amp(amp: str, amp_dtype: str, device: torch.device) -> tuple[Optional[torch.dtype], list[str]]:
    """trainer.amp (auto: auto_amp) and trainer.amp_dtype -> the autocast dtype (None = fp32) and notices.

    fp16 on the CPU falls back to fp32: torch's CPU kernels do not train in fp16 (said only when asked for)."""
    dtype = torch.float16 if amp_dtype == "fp16" else torch.bfloat16
    if not switch(amp, auto=auto_amp(device)):
        return None, []
    asked = str(amp).lower() != "auto"
    if device.type == "cpu":
        if dtype == torch.float16:
            return None, ["note: trainer.amp_dtype=fp16 on CPU is not supported for training; running in fp32 "
                          "(use trainer.amp_dtype=bf16 for autocast on CPU)"] if asked else []
        if not cpu_has_bf16():  # only when asked for: auto leaves such a CPU in fp32
            return dtype, ["note: trainer.amp=true on CPU: this CPU has no bf16 instructions (AVX512-BF16, AMX); "
                           "bf16 autocast is emulated and slow here"]
    return dtype, []


def compile_model(model: torch.nn.Module, enabled: bool) -> tuple[Optional[Callable], list[str]]:
    """torch.compile(model) for the forward pass (state dicts still come from `model`), or None, with notices;
    `enabled` is resolve_compile's answer."""
    if not enabled:
        return None, []
    try:
        return torch.compile(model), []
    except Exception as error:  # e.g. an unsupported platform or Python version
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return None, [f"note: trainer.compile=true failed ({type(error).__name__}: {first}); running eager"]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """torch.autocast for `dtype`, or a disabled one (fp32) when dtype is None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
