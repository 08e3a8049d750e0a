"""What every benchmark shares: machine and version info, the load average, the JSON report.

Light to import (no torch at top level), so a script can set thread variables first.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: run folders and caches of the benchmarks (git-ignored)
WORK = ROOT / "benchmarks" / "_work"


def offline() -> None:
    """Never touch the Hugging Face hub; keep tokenizers single-threaded and quiet."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def single_thread() -> int:
    """Run every library on one thread. On a shared machine, multi-threaded OpenMP kernels
    spin while other processes hold the cores and vary run times up to tenfold; one thread
    gives stable, comparable figures. Returns the thread count now in use."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def load_average() -> float:
    """The 1-minute load average (other work sharing the machine)."""
    return round(os.getloadavg()[0], 2)


def machine(**extra: Any) -> dict[str, Any]:
    """CPU model, cores, RAM, platform and the load average now; ``extra`` is merged in."""
    return {"cpu": cpu_model(), "cores_available": os.cpu_count(), "ram_gib": ram_gib(),
            "platform": platform.platform(), "load_average_1min": load_average(), **extra}


def versions(*modules: str) -> dict[str, str]:
    """Python, torch, transformers and emoplug versions, plus ``modules`` by import name."""
    import importlib

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "emoplug", *modules):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = "absent"
    return out


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(name: str, out: str | os.PathLike | None, **sections: Any) -> Path:
    """Write ``{"benchmark", "date", "command", **sections}`` as JSON and return the path
    (default ``benchmarks/results/<name>.json``). Sections without ``machine``/``versions``
    get them filled in."""
    report = {"benchmark": name, "date": now(), "command": command_line(), **sections}
    report.setdefault("machine", machine())
    report.setdefault("versions", versions())
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
