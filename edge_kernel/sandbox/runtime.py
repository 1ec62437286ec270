"""The ``rapha`` object inside the job process.

This is untrusted territory: the researcher's code runs beside it and can replace any
of it. So nothing here enforces anything the hospital relies on. The loader only asks
the broker for "the next batch of loader N"; the broker chooses the records and meters
them (S3). The helpers exist for convenience and to fail early with a clear error.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any, Iterator

import torch

from .channel import Channel

MAX_BATCH_BYTES = 1024 * 1024 * 1024
MAX_METRIC_POINTS = 1_000_000
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class BrokerRefused(RuntimeError):
    """The broker said no (budget spent, bad loader arguments)."""


class RaphaDataLoader:
    """Batches of the job's cohort as dicts of tensors; each iteration is one epoch."""

    def __init__(self, channel: Channel, batch_size: int, shuffle: bool, seed: int) -> None:
        self._channel = channel
        reply = _ask(channel, {"op": "open", "batch_size": batch_size, "shuffle": shuffle, "seed": seed})
        self._id = reply["loader"]
        self._batches = int(reply["batches"])
        self.records = int(reply["records"])

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        _ask(self._channel, {"op": "epoch", "loader": self._id})
        while True:
            self._channel.send({"op": "next", "loader": self._id})
            message = self._channel.recv()
            reply = _checked(message.header if message else None)
            if reply.get("end"):
                return
            # recv filled a fresh bytearray: the tensors share it, no copy.
            yield {name: torch.from_numpy(array) for name, array in message.arrays.items()}


class Rapha:
    def __init__(self, channel: Channel, params: dict[str, Any], schema: dict[str, Any], out_dir: Path) -> None:
        self._channel = channel
        self.params = dict(params)
        self.schema = dict(schema)
        self.out_dir = out_dir
        self.metrics: dict[str, list[float]] = {}
        self._points = 0
        self.saved = False

    @property
    def epochs(self) -> int:
        value = self.params.get("epochs", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> RaphaDataLoader:
        return RaphaDataLoader(self._channel, batch_size, shuffle, seed)

    def log(self, **metrics: Any) -> None:
        """Append finite numbers to named series (tensors of one element are fine)."""
        for name, value in metrics.items():
            if not _METRIC_NAME.match(name):
                raise ValueError("metric names are letters, digits, '_', '.', '-' (at most 64)")
            number = _finite(value)
            if self._points >= MAX_METRIC_POINTS:
                raise ValueError(f"at most {MAX_METRIC_POINTS} metric points per job")
            self.metrics.setdefault(name, []).append(number)
            self._points += 1

    def save(self, model_or_state_dict: Any) -> None:
        """Write the weights as safetensors; only tensors, contiguous, on the CPU."""
        from safetensors.torch import save_file

        state = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") \
            else model_or_state_dict
        if not isinstance(state, dict) or not state:
            raise TypeError("rapha.save takes a torch module or a non-empty dict of tensors")
        tensors = {}
        for name, value in state.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                raise TypeError("rapha.save stores only tensors under string names")
            # clone: tied weights share storage, which safetensors refuses
            tensors[name] = value.detach().to("cpu").contiguous().clone()
        self.out_dir.mkdir(exist_ok=True)
        save_file(tensors, str(self.out_dir / "weights.safetensors"))
        self.saved = True


def _finite(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError("rapha.log takes single numbers")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError("rapha.log takes numbers")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("rapha.log takes finite numbers")
    return number


def _ask(channel: Channel, request: dict[str, Any]) -> dict[str, Any]:
    channel.send(request)
    message = channel.recv()
    return _checked(message.header if message else None)


def _checked(reply: dict[str, Any] | None) -> dict[str, Any]:
    if reply is None:
        raise BrokerRefused("the data broker closed the channel")
    if not reply.get("ok"):
        raise BrokerRefused(str(reply.get("error", "refused")))
    return reply
