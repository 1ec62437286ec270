"""The edge's DP-SGD trainer: ``python -m edge_kernel.trainer.train_main --dir DIR --fd N``.

Trusted edge code only, in its own process under ``rapha-airgap`` like the job (no
network, an unprivileged uid, the job's time limit), started by the runner after the job
process of a DP job has ended. It imports no researcher code: the model and the loss
arrive as exported programs, loaded with the safe loader (``release/program.py``) and
validated (``privacy/validate.py``: ATen operators only, none that mixes samples). Then it
trains with ``privacy/dpsgd.py``'s ``PrivateTrainer``: Poisson lots of the cohort the
broker chose, asked for over the inherited socket ``N`` (the broker meters every record
that reaches this process), per-sample gradients clipped to ``max_grad_norm``, Gaussian
noise chosen from the policy's epsilon and delta, and the accountant; it stops when the
planned steps are done or the budget is spent.

DIR holds what the edge wrote: ``trainer.json`` (the policy's budget, the job's
hyperparameters, the field order and the cohort size), ``private.pt2`` (the loss program)
and ``model.pt2`` (the model alone, for the membership check). Into ``DIR/out`` it writes
``weights.safetensors`` (its own parameters, the only weights that leave), ``model.pt2``
with those weights, ``metrics.json`` (epsilon spent after each epoch; no loss, which
would spend budget of its own) and ``privacy.json`` (the receipt's privacy section). A
program it refuses before any record is read gives ``refusal.json`` with the reason,
which names the layer to change and holds no record data.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jupyter_rapha.protocol.errors import RaphaError
from jupyter_rapha.protocol.private import EPSILON_METRIC, MECHANISM, state_digest

from ..privacy.accountant import ACCOUNTANT_NAME, accountant_version
from ..privacy.dpsgd import DPConfig, PrivateTrainer
from ..privacy.validate import check_private_program
from ..release.program import UnsafeProgram, load_program
from ..wire.channel import Channel

MAX_LOT_BYTES = 1024 * 1024 * 1024
LOSS_PREFIX = "model."  # the loss program holds the model under this name (inside/private.py)


class TrainerRefused(Exception):
    """The programs cannot be trained privately; the reason leaves, no record was read."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_main", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--fd", required=True, type=int)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        _die_with_parent(args.parent_pid)
    torch.set_num_threads(2)
    directory = args.dir
    out = directory / "out"
    out.mkdir(exist_ok=True)
    config = json.loads((directory / "trainer.json").read_text("utf-8"))
    try:
        loss_program, model_program = programs(directory)
    except TrainerRefused as refused:
        (out / "refusal.json").write_text(json.dumps({"reason": str(refused)}), "utf-8")
        return 3
    with socket.socket(fileno=args.fd) as sock:
        result = train(loss_program, model_program, config, Channel(sock, max_payload_bytes=MAX_LOT_BYTES))
    write_outputs(out, *result)
    return 0


def programs(directory: Path) -> tuple[Any, Any]:
    """Both programs through the safe loader; the loss program validated for DP-SGD."""
    try:
        loss_program = load_program(directory / "private.pt2")
        model_program = load_program(directory / "model.pt2")
    except UnsafeProgram as unsafe:
        raise TrainerRefused(unsafe.message) from None
    try:
        check_private_program(loss_program)
    except RaphaError as refused:
        raise TrainerRefused(refused.message) from None
    return loss_program, model_program


def train(loss_program: Any, model_program: Any, config: dict[str, Any],
          channel: Channel) -> tuple[bytes, Any, dict[str, list[float]], dict[str, Any]]:
    request = config["request"]
    fields: list[str] = config["fields"]
    module = loss_program.module()
    settings = DPConfig(epochs=request["epochs"], batch_size=request["batch_size"], lr=request["lr"],
                        max_grad_norm=request["max_grad_norm"], epsilon=config["epsilon"], delta=config["delta"],
                        optimiser=request["optimiser"])
    trainer = PrivateTrainer(module, config["cohort_size"], settings)
    steps_per_epoch = max(1, round(1 / trainer.sample_rate))
    epsilons: list[float] = []
    while trainer.budget_left():  # the planned steps are the budget: the accountant's epsilon at the last
        where = {"step": trainer.steps_done + 1, "steps": trainer.steps_planned, "epochs": request["epochs"],
                 "epoch": min(request["epochs"], trainer.steps_done // steps_per_epoch + 1)}
        tensors = lot(channel, trainer.poisson_indices(), fields, where)
        trainer.step(tensors)
        if trainer.steps_done % steps_per_epoch == 0 or trainer.steps_done == trainer.steps_planned:
            epsilons.append(float(trainer.epsilon_spent()))
    weights, program = released(trainer.state_dict(), model_program)
    privacy = {
        "mechanism": MECHANISM, "epsilon_target": float(config["epsilon"]),
        "epsilon_spent": float(trainer.epsilon_spent()), "delta": float(config["delta"]),
        "noise_multiplier": float(trainer.noise_multiplier), "max_grad_norm": float(request["max_grad_norm"]),
        "sampling_rate": float(trainer.sample_rate), "steps": int(trainer.steps_done),
        "steps_planned": int(trainer.steps_planned), "epochs": int(request["epochs"]),
        "batch_size": int(request["batch_size"]), "lr": float(request["lr"]), "optimiser": request["optimiser"],
        "accountant": ACCOUNTANT_NAME, "accountant_version": str(accountant_version()),
        "program_sha256": config["program_sha256"], "parameters_sha256": state_digest(weights),
        "loss_released": False,
    }
    return weights, program, {EPSILON_METRIC: epsilons}, privacy


def lot(channel: Channel, indices: list[int], fields: list[str],
        where: dict[str, int] | None = None) -> tuple[torch.Tensor, ...]:
    """The lot's records from the broker, as tensors in the loss program's input order.
    ``where`` (step k of N, epoch e of E) is the job's progress, which the broker shows."""
    channel.send({"op": "lot", "indices": [int(i) for i in indices], **(where or {})})
    message = channel.recv()
    if message is None or not message.header.get("ok"):
        raise RuntimeError("the broker refused a lot")
    return tuple(torch.from_numpy(np.ascontiguousarray(message.arrays[name])) for name in fields)


def released(state: dict[str, torch.Tensor], model_program: Any) -> tuple[bytes, Any]:
    """The trainer's own parameters (its ``state_dict``, the only way out of it) under the
    model's names, as safetensors bytes, and the model program carrying exactly them (for
    the membership check)."""
    from safetensors.torch import save

    trained = {name[len(LOSS_PREFIX):]: value.detach().to("cpu").contiguous().clone()
               for name, value in state.items() if name.startswith(LOSS_PREFIX)}
    program_state = model_program.state_dict
    if set(program_state) - set(trained):
        raise RuntimeError("the model program holds weights the loss program does not")
    tensors = {}
    for name in program_state:
        program_state[name] = torch.nn.Parameter(trained[name], requires_grad=False) \
            if isinstance(program_state[name], torch.nn.Parameter) else trained[name]
        tensors[name] = trained[name]
    return save(tensors), model_program


def write_outputs(out: Path, weights: bytes, program: Any, metrics: dict[str, list[float]],
                  privacy: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    (out / "model.pt2").write_bytes(buffer.getbuffer())
    (out / "weights.safetensors").write_bytes(weights)
    (out / "metrics.json").write_text(json.dumps(metrics, allow_nan=False), "utf-8")
    if not all(math.isfinite(v) for v in metrics[EPSILON_METRIC]):
        raise RuntimeError("the accountant gave a non-finite epsilon")
    (out / "privacy.json").write_text(json.dumps(privacy, allow_nan=False), "utf-8")


def _die_with_parent(parent_pid: int) -> None:
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(125)


if __name__ == "__main__":
    sys.exit(main())
