"""What every benchmark script shares: the machine it ran on, its figures, and one JSON record per script.

A figure is one measured value with its unit, the target the issue set (if any) and whether it is met;
`benchmarks/suite.py` collects the records into one table. Records go to benchmarks/results/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

RESULTS = Path(__file__).with_name("results")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    record = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


def figure(name: str, value: float, unit: str, target: Optional[str] = None, met: Optional[bool] = None,
           **details: Any) -> dict[str, Any]:
    """One line of the suite's table: e.g. figure("trainlab / plain loop", 0.98, "x", ">= 0.97", True)."""
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, **details}


def median(values) -> float:
    return statistics.median(values)


def write_record(benchmark: str, figures: list[dict], path: Optional[str] = None, **details: Any) -> Path:
    """The script's JSON record (its figures, the machine, anything else it measured); `path` or
    benchmarks/results/<benchmark>.json."""
    out = Path(path) if path else RESULTS / f"{benchmark}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": benchmark, "machine": machine(), "figures": figures, **details}
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"written: {out}")
    return out


def peak_rss_of(command: list[str], **popen: Any) -> tuple[int, float]:
    """Run `command`: its return code and peak resident memory in MiB.

    The peak is the child's own high-water mark (VmHWM of /proc/<pid>/status, read until it exits; it only
    grows). Not wait4's ru_maxrss: Linux carries the parent's resident size at fork into the child's."""
    process = subprocess.Popen(command, **popen)
    peak_kib = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):  # exited between poll() and the read
            pass
        time.sleep(0.02)
    return process.returncode, peak_kib / 1024
