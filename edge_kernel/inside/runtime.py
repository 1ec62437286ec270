"""The ``rapha`` object inside the job process.

This is untrusted territory: the researcher's code runs beside it and can replace any
of it. So nothing here enforces anything the hospital relies on. The loader only asks
the broker for "the next batch of loader N"; the broker chooses the records and meters
them (S3). The helpers exist for convenience and to fail early with a clear error.
"""

from __future__ import annotations

import io
import math
import numbers
import sys
import threading
import traceback
import weakref
from collections import deque
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch

from jupyter_rapha.protocol.contract import METRIC_NAME_RULE, is_metric_name
from jupyter_rapha.protocol.device import job_device

from ..wire.channel import SHM_ALIGN, Channel, SharedArena, shm_items
from ..wire.messages import FIT_PRIVATE_NOT_DP, MAX_METRIC_POINTS
from ..wire.outputs import PROGRAM_FILE

MAX_BATCH_BYTES = 1024 * 1024 * 1024
NO_SUCH_ARTIFACT = "rapha.artifact: the job brought no artifact of that name (--artifact NAME=PATH)"
EXAMPLE_BATCH = 2  # a batch of one would let export fix the batch dimension at 1
# Every message raised here is listed in messages.RUNTIME_MESSAGES, so that it may leave.


class NotExportable(Exception):
    """The model cannot be exported for the membership check (no feature field)."""


class BrokerRefused(RuntimeError):
    """The broker said no (budget spent, bad loader arguments)."""


class RaphaDataLoader:
    """Batches of the job's cohort as dicts of tensors; each iteration is one epoch.

    ``prefetch`` batches are asked for ahead, so the broker prepares the next batch while
    the model trains on this one. With a shared arena, the broker writes each batch once,
    into a region of shared memory the loader names, and the tensors handed out are that
    region: no further copy. A region is leased to its batch: it is named in a request
    again only once every tensor of the batch (and every view of one) is gone, so a
    batch stays valid for as long as it is referenced, like any tensor. Code that keeps
    many batches fills the arena; later batches then come over the socket, slower but the
    same. ``copy=True`` copies each batch into private memory and frees its region at once.
    """

    def __init__(self, channel: Channel, batch_size: int, shuffle: bool, seed: int, *,
                 prefetch: int = 2, copy: bool = False, arena: _Arena | None = None) -> None:
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or not 0 <= prefetch <= 8:
            raise ValueError("prefetch is a number of batches, 0 to 8")
        self._channel = channel
        reply = _ask(channel, {"op": "open", "batch_size": batch_size, "shuffle": shuffle, "seed": seed})
        self._id = reply["loader"]
        self._batches = int(reply["batches"])
        self.records = int(reply["records"])
        self.batch_size, self.prefetch, self.copy = batch_size, prefetch, copy
        self._batch_bytes = int(reply.get("batch_bytes", 0))
        self._arena = arena

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        pending: deque[int | None] = deque()
        # The epoch's first batches are asked for before its reply is read, and never more
        # batches than the epoch has: no round trip is spent waiting at an epoch boundary.
        self._channel.send({"op": "epoch", "loader": self._id})
        self._asked = 0
        try:
            for _ in range(1 + self.prefetch):
                self._request(pending)
            started = self._channel.recv()
            _checked(started.header if started else None)
            while pending:
                region = pending.popleft()
                message = self._channel.recv()
                reply = _checked(message.header if message else None)
                if reply.get("end"):
                    self._free(region)
                    return
                batch = self._tensors(message, reply, region)
                self._request(pending)
                yield batch
        finally:
            self._drain(pending)

    def _request(self, pending: deque[int | None]) -> None:
        if self._asked >= self._batches:
            return
        self._asked += 1
        region = self._arena.alloc(self._batch_bytes) if self._arena and self._batch_bytes else None
        request: dict[str, Any] = {"op": "next", "loader": self._id}
        if region is not None:
            request["shm_offset"] = region
        self._channel.send(request)
        pending.append(region)

    def _drain(self, pending: deque[int | None]) -> None:
        """Read the answers to batches asked for ahead, so the channel stays in step
        when a loop stops early (break, exception)."""
        while pending:
            region = pending.popleft()
            self._channel.recv()
            self._free(region)

    def _free(self, region: int | None) -> None:
        if region is not None and self._arena is not None:
            self._arena.free(region)

    def _tensors(self, message: Any, reply: dict[str, Any], region: int | None) -> dict[str, torch.Tensor]:
        if "shm" in reply and self._arena is not None and region is not None:
            if self.copy:
                arrays = self._arena.view(region, self._batch_bytes, reply["shm"])
                tensors = {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}
                del arrays
                self._free(region)
                return tensors
            return {name: torch.from_numpy(array) for name, array in
                    self._arena.lease(region, self._batch_bytes, reply["shm"]).items()}
        self._free(region)
        # recv filled a fresh bytearray: the tensors share it, no copy.
        return {name: torch.from_numpy(array) for name, array in message.arrays.items()}


class _Arena:
    """The job's bookkeeping of which regions of the shared arena hold batches in use.

    A leased region is freed by a finalizer on the one array that spans it, which every
    tensor of the batch keeps alive. Finalizers may run on any thread, or on this one in
    the middle of an allocation (a collection), hence a re-entrant lock.
    """

    def __init__(self, shared: SharedArena) -> None:
        self.shared = shared
        self._used: dict[int, int] = {}  # offset -> size
        self._lock = threading.RLock()

    def alloc(self, size: int) -> int | None:
        with self._lock:
            offset = 0
            # a snapshot: a finalizer that frees a region meanwhile only leaves more room
            for start, length in sorted(self._used.items()):
                if start - offset >= size:
                    break
                offset = start + length
                offset += -offset % SHM_ALIGN
            if offset + size > self.shared.size:
                return None  # full: this batch comes over the socket instead
            self._used[offset] = size
            return offset

    def free(self, offset: int) -> None:
        with self._lock:
            self._used.pop(offset, None)

    def in_use(self) -> int:
        with self._lock:
            return len(self._used)

    def view(self, region: int, size: int, layout: Any) -> dict[str, np.ndarray]:
        """The arrays a reply names, each checked to lie inside the region it was given;
        all of them views of one array spanning the region."""
        whole = self.shared.array(region, np.dtype(np.uint8), (size,))
        arrays = {}
        for name, dtype, shape, offset in shm_items(layout):
            start, nbytes = offset - region, math.prod(shape) * dtype.itemsize
            if start < 0 or start % SHM_ALIGN or start + nbytes > size:
                raise BrokerRefused("the broker named shared memory outside the batch's region")
            arrays[name] = whole[start:start + nbytes].view(dtype).reshape(shape)
        return arrays

    def lease(self, region: int, size: int, layout: Any) -> dict[str, np.ndarray]:
        arrays = self.view(region, size, layout)
        if arrays:
            owner = next(iter(arrays.values())).base  # the array spanning the region
            weakref.finalize(owner, self.free, region)
        else:
            self.free(region)
        return arrays


class Rapha:
    def __init__(self, channel: Channel, params: dict[str, Any], schema: dict[str, Any], out_dir: Path,
                 shared: SharedArena | None = None) -> None:
        self._channel = channel
        self._arena = _Arena(shared) if shared is not None else None
        self.params = dict(params)
        self.schema = dict(schema)
        self.out_dir = out_dir
        self.metrics: dict[str, list[float]] = {}
        self._points = 0
        self.saved = False
        self.artifacts: dict[str, str] = {}  # name -> staged safetensors file (read-only), set by job_main
        self.gpus = 0  # GPUs the edge granted the job (job.json), set by job_main
        # A distributed job's process (``--processes``): torch.distributed is initialised
        # before the cell runs; only rank 0's saves and metrics are the job's.
        self.rank = 0
        self.world_size = 1

    @property
    def device(self) -> str:
        """"cuda" when the edge granted GPUs and torch sees one, else "cpu"."""
        return job_device(self.gpus, torch.cuda.is_available())

    @property
    def epochs(self) -> int:
        value = self.params.get("epochs", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0, *, prefetch: int = 2,
               copy: bool = False) -> RaphaDataLoader:
        return RaphaDataLoader(self._channel, batch_size, shuffle, seed, prefetch=prefetch, copy=copy,
                               arena=self._arena)

    def artifact(self, name: str) -> dict[str, torch.Tensor]:
        """The state dict of an artifact the job brought (``--artifact NAME=PATH``): a dict
        of CPU tensors, read from the edge's checked safetensors copy (never unpickled)."""
        return load_artifact(self.artifacts, name)

    def log(self, **metrics: Any) -> None:
        """Append finite numbers to named series (tensors of one element are fine)."""
        for name, value in metrics.items():
            if not is_metric_name(name):  # the release check's rule: refused now, not after the budget is spent
                raise ValueError(METRIC_NAME_RULE)
            number = _finite(value)
            if self._points >= MAX_METRIC_POINTS:
                raise ValueError(f"at most {MAX_METRIC_POINTS} metric points per job")
            self.metrics.setdefault(name, []).append(number)
            self._points += 1

    def save(self, model_or_state_dict: Any) -> None:
        """Write the weights as safetensors; only tensors, contiguous, on the CPU. A torch
        module is also exported (``torch.export``) on inputs shaped as ``rapha.schema``'s
        features, for the edge's membership check; a model that cannot be exported is
        saved all the same, and the check reports it as not checkable."""
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
        self._save_program(model_or_state_dict, tensors)
        self.saved = True

    def fit_private(self, model: Any, loss_fn: Any, **settings: Any) -> None:
        """DP mode only (``inside/private.py``), which the edge reads from the cell's text."""
        raise RuntimeError(FIT_PRIVATE_NOT_DP)

    def _save_program(self, model: Any, tensors: dict[str, torch.Tensor]) -> None:
        program = self.out_dir / PROGRAM_FILE
        program.unlink(missing_ok=True)  # an earlier save's program must not stand for these weights
        if not isinstance(model, torch.nn.Module):
            return
        try:
            exported = export_model(model, self.schema)
            if same_weights(exported.state_dict, tensors):
                # Into memory first: torch's archive writer aborts the whole process when a
                # write fails (the sandbox's file size limit), where a Python write raises.
                buffer = io.BytesIO()
                torch.export.save(exported, buffer)
                program.write_bytes(buffer.getbuffer())
        except Exception:  # not a check: the edge reads a missing program as "not checkable"
            traceback.print_exc(file=sys.stderr)  # for the hospital's eyes; stderr never leaves
            program.unlink(missing_ok=True)  # a half-written one (file size limit) is none


def load_artifact(artifacts: dict[str, str], name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = artifacts.get(name) if isinstance(name, str) else None
    if path is None:
        raise LookupError(NO_SUCH_ARTIFACT)  # not KeyError: its text would leave quoted, unmatched
    return load_file(path)


def example_inputs(schema: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """One zero tensor per feature field, in schema order, with a batch dimension in front:
    the call ``model(batch["image"])`` that training cells make."""
    features = [spec for spec in schema.values() if isinstance(spec, dict) and spec.get("kind") == "feature"]
    if not features:
        raise NotExportable()  # no input to export on; never shown to the cell
    return tuple(torch.zeros((EXAMPLE_BATCH, *spec["shape"]), dtype=getattr(torch, spec["dtype"]))
                 for spec in features)


def export_model(model: torch.nn.Module, schema: dict[str, Any]) -> Any:
    """``torch.export`` of the model in eval mode (as it is judged), batch size left free."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = tuple(tensor.to(device) for tensor in example_inputs(schema))
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in inputs)
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, inputs, dynamic_shapes=dynamic)
    finally:
        model.train(was_training)
    if device.type != "cpu":
        # the check evaluates on the CPU: a program with CUDA weights would not run there
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, "cpu")
    return program


def same_weights(program_state: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> bool:
    """The program carries exactly the weights saved (the edge checks this again)."""
    if program_state.keys() != saved.keys():
        return False
    return all(torch.equal(program_state[name].detach().to("cpu"), saved[name]) for name in saved)


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
