"""Helpers shared by the bench scripts: machine facts and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory and the versions that matter."""
    from importlib.metadata import version

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]
        )
    except (OSError, StopIteration, ValueError):
        kib = 0
    try:
        temporal = subprocess.run([str(BIN / "temporal"), "--version"], capture_output=True, text=True, timeout=10)
        cli = temporal.stdout.strip()
    except OSError:
        cli = "not found"
    return {
        "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "ram_gib": round(kib / 2**20, 1),
        "python": platform.python_version(), "django": version("django"), "temporalio": version("temporalio"),
        "temporal_cli": cli, "os": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
