"""The Rego policy core: an immutable policy bundle, one evaluation, one decision.

Shared by the edge's policy gate and the notebook preflight's dry run, so that both read
the hospital's policy the same way. Placement: ``jupyter_rapha.protocol`` does no I/O,
and evaluating Rego is pure computation over texts already in memory, so it lives here;
``regopy`` (the engine) is imported lazily, inside the evaluation, through ``engine`` so
that callers and tests can substitute it and so that importing this module never loads
native code. Reading the policy directory is the edge's business (``edge_kernel.gates.policy``).

Fail closed (S4): an engine that will not load, a module that does not compile, an
evaluation error, a timeout, an undefined decision, a non-boolean ``allow`` or a
malformed ``deny`` all give a refusal whose reason says which.

Time limit: evaluation runs in a daemon worker thread. The limit is on the CPU time that
thread spends evaluating (``timeout_s``, read from the thread's own CPU clock), not on the
wall clock: loading the engine (and, in a notebook, torch before it) is not counted, and
a machine whose cores are busy with other work must not turn an honest request into a
refusal. A generous wall-clock backstop (``wall_timeout_s``) still refuses an evaluation
that never finishes for any reason, e.g. one blocked rather than computing. regopy calls
into its library through ctypes, which releases the GIL, so the caller regains control
on time even while the engine computes; a runaway evaluation is abandoned (it cannot be
killed) and finishes, or not, in the background. A subprocess would be killable but costs
more than the whole 30 ms budget per job, and the policy is the hospital's own reviewed
code, so a runaway is a configuration fault to report, not an attack to contain.

Importing order: regopy loaded before torch aborts the process when torch loads later.
Callers in a process that may use torch import torch first (see ``jupyter_rapha.preflight``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Mapping

from .canonical import canonical_json

QUERY = "data.rapha.decision"
DEFAULT_TIMEOUT_S = 2.0  # CPU seconds of one evaluation (measured: about 0.03 s for the shipped policy)
DEFAULT_WALL_TIMEOUT_S = 60.0  # the backstop, wall clock, engine start-up included
_POLL_S = 0.01
DATA_FILE = "data.json"
_UNDEFINED = object()
EngineLoader = Callable[[], Callable[[], Any]]  # returns a factory of interpreters


@dataclass(frozen=True)
class PolicyBundle:
    """Rego modules and their data, fixed at load time. ``modules`` are (relative path,
    text) pairs in path order; ``data_json`` is the text of data.json ("{}" if absent)."""

    modules: tuple[tuple[str, str], ...]
    data_json: str = "{}"

    @classmethod
    def from_texts(cls, modules: Mapping[str, str], data_json: str | None = None) -> PolicyBundle:
        return cls(tuple(sorted(modules.items())), data_json if data_json is not None else "{}")

    def file_digests(self) -> list[tuple[str, str]]:
        files = [(path, _sha256(text)) for path, text in self.modules]
        files.append((DATA_FILE, _sha256(self.data_json)))
        return sorted(files)

    @property
    def digest(self) -> str:
        """SHA-256 over the canonical JSON of sorted [relative path, sha256(content)] pairs."""
        return hashlib.sha256(canonical_json([list(pair) for pair in self.file_digests()])).hexdigest()

    def evidence(self) -> dict[str, Any]:
        return {"bundle_sha256": self.digest,
                "files": [{"path": path, "sha256": digest} for path, digest in self.file_digests()]}


@dataclass(frozen=True)
class Decision:
    allow: bool
    deny: tuple[str, ...] = ()
    obligations: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None  # set when the decision is a fail-closed refusal, not the policy's word

    @property
    def allowed(self) -> bool:
        return self.allow is True and not self.deny and self.fault is None

    @classmethod
    def refused(cls, reason: str) -> Decision:
        return cls(False, (reason,), {}, fault=reason)

    def to_dict(self) -> dict[str, Any]:
        return {"allow": self.allow, "deny": list(self.deny), "obligations": self.obligations,
                "fault": self.fault}


class PolicyEvalError(Exception):
    """The engine reported an error; the message names file and line, no input data."""


def load_engine() -> Callable[[], Any]:
    """A factory of fresh interpreters (lazy: native code loads only when a policy runs)."""
    from regopy import Interpreter, LogLevel  # type: ignore[import-untyped]

    def make() -> Any:
        rego = Interpreter()
        # Errors come back as exceptions; the engine's own printing would copy policy
        # text and error trees into the service's stdout.
        rego.log_level = LogLevel.NONE
        return rego

    return make


def evaluate(bundle: PolicyBundle, input_doc: Mapping[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S,
             wall_timeout_s: float = DEFAULT_WALL_TIMEOUT_S, engine: EngineLoader = load_engine,
             query: str = QUERY) -> Decision:
    """Evaluate ``query`` on ``input_doc``; every failure is a refusal with its reason.
    ``timeout_s`` bounds the evaluation's CPU time, ``wall_timeout_s`` the whole wait."""
    raw, fault = evaluate_query(bundle, input_doc, timeout_s=timeout_s, wall_timeout_s=wall_timeout_s,
                                engine=engine, query=query)
    if fault is not None:
        return Decision.refused(fault)
    return parse_decision(raw, query)


def evaluate_query(bundle: PolicyBundle, input_doc: Mapping[str, Any], *, query: str,
                   timeout_s: float = DEFAULT_TIMEOUT_S, wall_timeout_s: float = DEFAULT_WALL_TIMEOUT_S,
                   engine: EngineLoader = load_engine) -> tuple[Any, str | None]:
    """``(value, None)`` with the query's raw value (``None`` when undefined), or
    ``(None, reason)`` when it could not be evaluated: the caller parses the value and
    refuses on a fault (another decision than the job policy's, e.g. the release's)."""
    if not bundle.modules:
        return None, "the policy bundle holds no .rego modules"
    try:
        input_json = json.dumps(input_doc, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        return None, f"the policy input is not JSON ({type(exc).__name__})"
    box: dict[str, Any] = {}
    worker = threading.Thread(target=_work, args=(box, engine, bundle, input_json, query),
                              name="rapha-policy-eval", daemon=True)
    worker.start()
    overrun = _wait(worker, box, timeout_s, wall_timeout_s)
    if overrun:
        return None, overrun
    if "fault" in box:
        return None, str(box["fault"])
    raw = box.get("raw", _UNDEFINED)
    return (None, f"policy decision {query} is undefined") if raw is _UNDEFINED else (raw, None)


def _wait(worker: threading.Thread, box: dict[str, Any], cpu_limit: float, wall_limit: float) -> str:
    """Join ``worker``; the reason to refuse if it overran either limit, else ""."""
    clock = _cpu_clock(worker)
    deadline = time.monotonic() + wall_limit
    while True:
        worker.join(min(_POLL_S, cpu_limit, wall_limit))
        if not worker.is_alive():
            return ""
        if time.monotonic() >= deadline:
            return f"policy evaluation did not finish within {wall_limit:g} s"
        if _cpu_used(clock, box) > cpu_limit:
            return f"policy evaluation did not finish within {cpu_limit:g} s of CPU time"


def _cpu_clock(worker: threading.Thread) -> int | None:
    try:
        return time.pthread_getcpuclockid(worker.ident or 0)
    except (AttributeError, OSError):  # no per-thread CPU clock here: count wall time instead
        return None


def _cpu_used(clock: int | None, box: dict[str, Any]) -> float:
    """Seconds of CPU the worker spent since the engine was loaded (0 before that)."""
    if "cpu_start" not in box:
        return 0.0
    if clock is None:
        return time.monotonic() - float(box["wall_start"])
    try:
        return time.clock_gettime(clock) - float(box["cpu_start"])
    except OSError:  # the thread ended between the join and this read
        return 0.0


def _work(box: dict[str, Any], engine: EngineLoader, bundle: PolicyBundle, input_json: str, query: str) -> None:
    try:
        make_interpreter = engine()
    except Exception as exc:  # ImportError, OSError from the shared library: deny, never skip
        box["fault"] = f"policy engine unavailable ({type(exc).__name__})"
        return
    # The CPU budget starts here: engine start-up is paid once per process, not per policy.
    box["wall_start"], box["cpu_start"] = time.monotonic(), time.thread_time()
    try:
        box["raw"] = _query(make_interpreter, bundle, input_json, query)
    except PolicyEvalError as exc:
        box["fault"] = str(exc)
    except Exception as exc:
        box["fault"] = f"policy evaluation failed: {_engine_message(exc, bundle)}"


def _query(make_interpreter: Callable[[], Any], bundle: PolicyBundle, input_json: str, query: str) -> Any:
    rego = make_interpreter()
    for path, text in bundle.modules:
        try:
            rego.add_module(path, text)
        except Exception as exc:
            raise PolicyEvalError(f"policy does not compile: {_engine_message(exc, bundle)}") from exc
    try:
        rego.add_data_json(bundle.data_json)
    except Exception as exc:
        raise PolicyEvalError(f"policy data is not valid JSON: {_engine_message(exc, bundle)}") from exc
    rego.set_input_term(input_json)
    output = rego.query(query)
    if not output.ok():
        # Never str() a failed regopy Output: that path crashes the engine library.
        raise PolicyEvalError(f"policy evaluation failed: {_interpreter_error(rego, bundle)}")
    results = output.results
    if not results or not results[0].expressions:
        return _UNDEFINED
    return results[0].expressions[0]


def parse_decision(raw: Any, query: str = QUERY) -> Decision:
    """Accept only {"allow": bool, "deny": [str...], "obligations": {...}}."""
    if raw is _UNDEFINED:
        return Decision.refused(f"policy decision {query} is undefined")
    if not isinstance(raw, dict):
        return Decision.refused(f"policy decision {query} is not an object")
    allow = raw.get("allow")
    if not isinstance(allow, bool):
        return Decision.refused("policy decision 'allow' is missing or not a boolean")
    deny = raw.get("deny")
    if not isinstance(deny, list) or not all(isinstance(item, str) for item in deny):
        return Decision.refused("policy decision 'deny' is missing or not a list of strings")
    obligations = raw.get("obligations", {})
    if not isinstance(obligations, dict):
        return Decision.refused("policy decision 'obligations' is not an object")
    if allow and deny:
        deny = [*deny, "policy both allowed and denied the job; denial wins"]
    if not allow and not deny:
        deny = ["policy did not allow the job"]
    return Decision(allow, tuple(sorted(set(deny))), obligations)


_ERROR = re.compile(r"\(error \d+:([^|\s]+)\|(\d+)\|\d+\s*\(errormsg \d+:([^\n)]*)")


def _engine_message(exc: BaseException, bundle: PolicyBundle) -> str:
    return _locate(str(exc), bundle) or type(exc).__name__


def _interpreter_error(rego: Any, bundle: PolicyBundle) -> str:
    try:
        from regopy.rego_shared import rego_get_error  # type: ignore[import-untyped]  # no public error text

        return _locate(rego_get_error(rego._impl), bundle) or "engine error"
    except Exception as exc:  # the error text is a courtesy; the refusal stands without it
        return f"engine error ({type(exc).__name__})"


def _locate(text: str, bundle: PolicyBundle) -> str:
    """'file line N: message' from the engine's error tree (byte offsets -> lines)."""
    match = _ERROR.search(text)
    if not match:
        first = text.strip().splitlines()[0] if text.strip() else ""
        return first[:200]
    path, offset, message = match.group(1), int(match.group(2)), match.group(3).strip()
    sources = dict(bundle.modules)
    if path in sources:
        line = sources[path].encode("utf-8")[:offset].count(b"\n") + 1
        return f"{path} line {line}: {message}"
    return f"{path}: {message}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
