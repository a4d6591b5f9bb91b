"""What a benchmark ran on (written beside every result) and atomic result files."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
from pathlib import Path

import torch

__all__ = ["machine_info", "machine_tag"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "peft": _version("peft"),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    return info


def machine_tag(device: str | torch.device = "cpu") -> str:
    """``cpu``, or the GPU's short name (``h100``, ``h200``, ``a100``...) for file names."""
    if torch.device(device).type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(torch.device(device))
    found = re.search(r"\b([A-Z]{1,2}\d{2,4})\b", name)
    return (found.group(1) if found else re.sub(r"\W+", "-", name)).lower()
