"""The receipt's ``devices`` section: the GPUs a job was granted, and its GPU-seconds.

``{"driver_version": "550.54.15", "gpus": [{"model": "NVIDIA H200", "memory_mib": null}],
"gpu_seconds": 1200}``: written by the edge only when ``sandbox.gpus`` granted GPUs (a
CPU job's receipt has no section, as every receipt before GPUs). GPU-seconds are the
job's wall seconds times the GPUs granted. Nothing in it names the hospital's machine
(no UUID, no bus location). Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

MAX_GPUS = 256
MAX_TEXT = 128
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def devices_section(description: dict[str, Any], started: str, finished: str) -> dict[str, Any] | None:
    """From the air-gap gate's ``gpus`` evidence and the job's times; None without GPUs."""
    gpus = [{"model": d["model"], "memory_mib": d.get("memory_mib")} for d in description.get("devices", [])]
    if not gpus:
        return None
    return {"driver_version": description["driver_version"], "gpus": gpus,
            "gpu_seconds": wall_seconds(started, finished) * len(gpus)}


def wall_seconds(started: str, finished: str) -> int:
    try:
        seconds = (datetime.strptime(finished, TIME_FORMAT) - datetime.strptime(started, TIME_FORMAT)).total_seconds()
    except ValueError:
        return 0
    return max(0, int(seconds))


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def devices_problem(section: Any) -> str:
    """Empty when the section is well formed, else what is wrong with it."""
    if not isinstance(section, dict) or set(section) != {"driver_version", "gpus", "gpu_seconds"}:
        return "the devices section does not have driver_version, gpus and gpu_seconds"
    gpus = section["gpus"]
    if not isinstance(gpus, list) or not 0 < len(gpus) <= MAX_GPUS:
        return f"the devices section must list 1 to {MAX_GPUS} GPUs"
    for gpu in gpus:
        memory = gpu.get("memory_mib", 0) if isinstance(gpu, dict) else 0
        if not isinstance(gpu, dict) or not _text(gpu.get("model")) or not (memory is None or _count(memory)):
            return "a GPU in the devices section has no model or a memory that is not a whole number"
    if not _text(section["driver_version"]) or not _count(section["gpu_seconds"]):
        return "the devices section's driver version or GPU-seconds are malformed"
    return ""


def devices_summary(section: dict[str, Any]) -> str:
    models: dict[str, int] = {}
    for gpu in section["gpus"]:
        memory = f" ({gpu['memory_mib']} MiB)" if gpu.get("memory_mib") is not None else ""
        label = f"{gpu['model']}{memory}"
        models[label] = models.get(label, 0) + 1
    listed = ", ".join(f"{count} x {label}" for label, count in models.items())
    return f"{listed}, driver {section['driver_version']}, {section['gpu_seconds']} GPU-seconds"
