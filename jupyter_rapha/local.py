"""``--local``: a dry run of a training cell in the notebook, on synthetic data.

The cell sees a ``rapha`` object with the same surface as the edge's runtime (loader,
log, save, params, schema, epochs), fed with random records shaped by the dataset's
schema. Nothing real is read, so a researcher can debug shapes, losses and the save
call before spending budget at a hospital. The cohort is sized the way the edge sizes
it: the first ``min(budget, synthetic size)`` records, walked by every epoch.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator, Mapping, Sequence

from .client import JobFailed
from .protocol.cellinfo import metric_name_problems
from .protocol.contract import metric_name_refusal
from .protocol.device import job_device
from .protocol.environment import CodeFile, Environment, check_imports, version_differences
from .protocol.errors import BadInput, RaphaError

CELL_FILENAME = "<cell>"
DEFAULT_SYNTHETIC_RECORDS = 256
LABEL_CLASSES = 2  # labels are small ints: 0 .. LABEL_CLASSES-1
_TORCH_DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")


def _torch() -> Any:
    import torch  # lazily: `import jupyter_rapha` must stay cheap

    return torch


def synthetic_records(schema: dict[str, dict[str, Any]], count: int, seed: int) -> dict[str, Any]:
    """``count`` random records per field, the same for the same seed."""
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    return {name: _field_values(torch, spec, count, generator) for name, spec in schema.items()}


def _field_values(torch: Any, spec: dict[str, Any], count: int, generator: Any) -> Any:
    dtype_name = str(spec.get("dtype", "float32"))
    if dtype_name not in _TORCH_DTYPES:
        raise BadInput(f"schema dtype {dtype_name!r} is not one of {', '.join(_TORCH_DTYPES)}")
    dtype = getattr(torch, dtype_name)
    shape = (count, *[int(d) for d in spec.get("shape", [])])
    if spec.get("kind") == "label" or dtype_name in ("int64", "int32"):
        return torch.randint(0, LABEL_CLASSES, shape, generator=generator).to(dtype)
    if dtype_name == "uint8":
        return torch.randint(0, 256, shape, generator=generator).to(dtype)
    if dtype_name == "bool":
        return torch.randint(0, 2, shape, generator=generator).to(dtype)
    return torch.randn(shape, generator=generator).to(dtype)


class LocalLoader:
    """Batches of the cohort as dicts of tensors; ``len()`` is the number of batches."""

    def __init__(self, runtime: LocalRuntime, batch_size: int, shuffle: bool, seed: int | None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise BadInput("batch_size must be a positive whole number")
        self.runtime, self.batch_size, self.shuffle = runtime, batch_size, shuffle
        self.seed = runtime.seed if seed is None else seed
        self._passes = 0

    def __len__(self) -> int:
        return math.ceil(self.runtime.cohort_size / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        torch = _torch()
        size = self.runtime.cohort_size
        if self.shuffle:  # a new order each pass, reproducible from the seed
            order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed + self._passes))
        else:
            order = torch.arange(size)
        self._passes += 1
        self.runtime.passes += 1
        for start in range(0, size, self.batch_size):
            index = order[start:start + self.batch_size]
            self.runtime.records_seen.update(int(i) for i in index)
            yield {name: values[index] for name, values in self.runtime.data.items()}


@dataclass
class LocalRuntime:
    """The local stand-in for the edge's ``rapha`` object."""

    schema: dict[str, dict[str, Any]]
    params: dict[str, Any]
    epochs: int
    cohort_size: int
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    weights: bytes | None = None
    records_seen: set[int] = field(default_factory=set)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> the checked local safetensors file
    passes: int = 0  # passes over the cohort begun, by every loader the cell made
    # Told after each rapha.log: (the metrics of that call, the pass they came in). The
    # dry run's live chart; nothing here reaches an edge.
    on_log: Callable[[dict[str, float], int], None] | None = None
    # A local dry run is one process, rank 0 of 1, whatever --processes asks of the edge.
    rank: int = 0
    world_size: int = 1

    @property
    def device(self) -> str:
        """The edge's rule, with this machine's GPUs standing for the granted ones."""
        torch = _torch()
        return job_device(torch.cuda.device_count(), torch.cuda.is_available())

    def artifact(self, name: str) -> dict[str, Any]:
        """The state dict of ``--artifact NAME=PATH``, as the edge's ``rapha.artifact`` gives it."""
        from safetensors.torch import load_file

        if name not in self.artifacts:
            raise BadInput(f"rapha.artifact: the job brought no artifact named {name!r}",
                           hint=f"add --artifact {name}=PATH" + (f"; brought: {', '.join(self.artifacts)}"
                                                                  if self.artifacts else ""))
        return dict(load_file(self.artifacts[name]))

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int | None = None) -> LocalLoader:
        # shuffle=True: the edge's default (inside/runtime.py), so a dry run trains the same way
        return LocalLoader(self, batch_size, shuffle, seed)

    def log(self, **metrics: Any) -> None:
        for name in metrics:
            refusal = metric_name_refusal(name)  # a name built at run time, e.g. rapha.log(**values)
            if refusal is not None:
                raise BadInput(refusal)
        logged = {name: _finite(name, value) for name, value in metrics.items()}
        for name, number in logged.items():
            self.metrics.setdefault(name, []).append(number)
        if self.on_log is not None:
            self.on_log(logged, self.passes)

    def save(self, model_or_state: Any) -> None:
        from safetensors.torch import save

        state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
        if not isinstance(state, dict) or not state:
            raise BadInput("rapha.save takes a torch module or a non-empty state dict")
        torch = _torch()
        tensors = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise BadInput(f"rapha.save: {key!r} is not a tensor")
            tensors[str(key)] = value.detach().cpu().contiguous().clone()
        self.weights = save(tensors)

    def fit_private(self, model: Any, loss_fn: Any, *, epochs: int = 1, batch_size: int = 32, lr: float = 0.1,
                    max_grad_norm: float = 1.0, optimiser: str = "sgd") -> None:
        """DP mode, as at the edge: the model and loss checked, exported and trained with
        DP-SGD (Opacus) on the synthetic cohort; ``metrics`` gets the epsilon per epoch."""
        from .private_local import fit_private_locally

        settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_grad_norm": max_grad_norm,
                    "optimiser": optimiser}
        self.weights, self.metrics = fit_private_locally(self.data, self.schema, model, loss_fn, settings)
        self.records_seen.update(range(self.cohort_size))  # Poisson lots reach every record, in time

    @property
    def records_used(self) -> int:
        return len(self.records_seen)


def _finite(name: str, value: Any) -> float:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"rapha.log: {name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise BadInput(f"rapha.log: {name} is not finite ({value})")
    return float(value)


@dataclass
class LocalOutcome:
    weights: bytes
    metrics: dict[str, list[float]]
    records_used: int
    cohort_size: int


def make_runtime(schema: dict[str, dict[str, Any]], fields: list[str] | None, budget: int,
                 params: dict[str, Any], epochs: int, seed: int = 0,
                 synthetic_size: int = DEFAULT_SYNTHETIC_RECORDS) -> LocalRuntime:
    chosen = _select(schema, fields)
    cohort = min(budget, synthetic_size)
    if cohort < 1:
        raise BadInput("the budget must allow at least one record")
    runtime = LocalRuntime(schema=chosen, params=dict(params), epochs=epochs, cohort_size=cohort, seed=seed)
    runtime.data = synthetic_records(chosen, cohort, seed)
    return runtime


def _select(schema: dict[str, dict[str, Any]], fields: list[str] | None) -> dict[str, dict[str, Any]]:
    if not schema:
        raise BadInput("the dataset schema is empty: nothing to synthesise")
    wanted = list(fields) if fields else list(schema)
    unknown = [f for f in wanted if f not in schema]
    if unknown:
        raise BadInput(f"the dataset has no field {', '.join(unknown)}", hint=f"fields: {', '.join(schema)}")
    return {name: dict(schema[name]) for name in wanted}


def local_versions() -> dict[str, str]:
    """The distributions installed in this kernel's environment, by name."""
    from importlib.metadata import distributions

    versions: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and name not in versions:  # the first on sys.path is the one imported
            versions[name] = dist.version
    return versions


def environment_warnings(code: str, environments: Sequence[tuple[str, Environment]], first_line: int = 1,
                         local: Mapping[str, str] | None = None) -> list[str]:
    """What a dry run here cannot show of each edge (``(site, listing)``): the packages the
    cell imports at another version there, and the imports the edge lacks."""
    cell = [CodeFile(CELL_FILENAME, code, first_line)]
    versions = local_versions() if local is None else local
    lines: list[str] = []
    for site, environment in environments:
        lines += version_differences(cell, environment, versions, site=f"edge {site}")
        found = check_imports(cell, environment, site=f"edge {site}")
        lines += [f"{line.split(': remove the import')[0]}: the job there would fail" for line in found.missing]
    return lines


class CellFailed(JobFailed):
    """The cell raised in the local dry run: its type, message and line in the cell. The
    data is synthetic, so the message is shown, unlike at the edge; the traceback through
    torch and this module is not, because the line of the cell is what to fix."""

    where = "in the local dry run"


def _cell_failed(exc: BaseException, first_line: int = 1) -> CellFailed:
    line = exc.lineno if isinstance(exc, SyntaxError) and exc.filename == CELL_FILENAME else None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == CELL_FILENAME:
            line = frame.lineno
    if line is not None:
        line += first_line - 1  # the editor's number, as the edge reports it
    detail = exc.diagnostics() if isinstance(exc, RaphaError) else (exc.msg if isinstance(exc, SyntaxError)
                                                                     else str(exc))
    where = f" at line {line} of the cell" if line else ""
    return CellFailed(f"{type(exc).__name__}{where}" + (f": {detail}" if detail else ""),
                      error_type=type(exc).__name__, line=line, detail=detail)


class MetricNamesRefused(BadInput):
    """The cell logs a metric under a name the edge refuses: said before the cell runs, in
    the preflight's words (``cellinfo.metric_name_problems``)."""


def run_local(code: str, namespace: dict[str, Any], runtime: LocalRuntime, first_line: int = 1) -> LocalOutcome:
    """Run ``code`` in ``namespace`` with ``rapha`` bound to ``runtime``. An exception
    from the cell becomes ``CellFailed`` (chained to the original, for a debugger). A
    metric name the edge would refuse stops the cell before it runs, as preflight does."""
    problems = metric_name_problems(code, first_line)
    if problems:
        raise MetricNamesRefused(problems[0], hint="rename the metric: the edge refuses the job at submission")
    missing = object()
    previous = namespace.get("rapha", missing)
    namespace["rapha"] = runtime
    try:
        exec(compile(code, CELL_FILENAME, "exec"), namespace)  # noqa: S102 - the user's own cell
    except Exception as exc:
        raise _cell_failed(exc, first_line) from exc
    finally:
        if previous is missing:
            namespace.pop("rapha", None)
        else:
            namespace["rapha"] = previous
    if runtime.weights is None:
        raise RaphaError("the cell finished without calling rapha.save(model) (or rapha.fit_private): "
                         "no weights would come back")
    return LocalOutcome(runtime.weights, runtime.metrics, runtime.records_used, runtime.cohort_size)
