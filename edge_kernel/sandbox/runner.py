"""Run one job: the job process beside a broker thread, joined by a private socketpair.

The runner is trusted edge code; the job process is not. So the runner writes the job
directory before the job starts, hands the job nothing but an inherited socket, kills
it at the time budget or on cancel, and treats everything the job leaves in ``out/``
as hostile input, read by ``release.outputs``: files are opened without following links,
must be plain files of bounded size, and the error report is sanitised as it is read.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.errors import SandboxFault
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.private import MODE_DP, job_mode

from ..artifacts import ArtifactStore, remove_inputs, stage_includes
from ..data.broker import Broker, MeterSummary
from ..data.consent import OptOutList
from ..data.feeder import Feeder
from ..data.holdback import Holdback
from ..data.pseudonym import derive_seed
from ..data.record_store import RecordStore, dataset_cache_dir
from ..data.registry import Dataset, DatasetRegistry
from ..gates.obligations import Limits, PrivacyBudget
from ..release.outputs import JobOutputs, OutputRefused, read_outputs
from ..data.source import Index, Source
from ..data.sources import open_source
from ..settings import Settings
from ..wire.channel import SharedArena
from .gpus import job_grant
from .launch import wrap_command
from .lifeline import PROCESS_FILE, JobProcess, write_process_file
from .private import NotTrainable, TrainerResult, prepare_trainer, read_trainer, trainer_command

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
PROGRESS_SECONDS = 0.5
BROKER_JOIN_SECONDS = 10.0
JOB_THREADS = "2"
ProgressCallback = Callable[[dict[str, int]], None]


@dataclass(frozen=True)
class RunOutcome:
    status: str  # "completed" | "failed" | "timeout" | "cancelled"
    weights: bytes | None
    metrics: dict[str, list[float]]
    error: dict[str, Any] | None  # {"type", "line", "message"}, sanitised by release.error_report
    meter: MeterSummary
    started: str
    finished: str
    fault: str | None = None  # generic text when the edge side broke or refused the outputs
    exit_code: int | None = field(default=None)
    # the exported program (out/model.pt2) for the membership check; edge-side only, never
    # released; None when the model could not be exported (the check: "not checkable")
    program: bytes | None = None
    # DP mode: the trainer's privacy section (the receipt's ``privacy``), None otherwise
    privacy: dict[str, Any] | None = None
    # a reason the researcher reads when a DP job's model could not be trained privately
    refusal: str | None = None


def run_job(spec: JobSpec, dataset: Dataset, dataset_path: Path, granted_fields: list[str] | tuple[str, ...],
            hmac_key: bytes, workdir: Path, settings: Settings, *, cancel: threading.Event | None = None,
            on_progress: ProgressCallback | None = None, consent: OptOutList | None = None,
            index: Index | None = None, max_epochs: int | None = None,
            process_file: Path | None = None, holdback: Holdback | None = None,
            privacy: PrivacyBudget | None = None) -> RunOutcome:
    """Run a job against the dataset's declared source; ``consent`` drops opted-out
    patients before anything is counted; ``index`` reuses one the edge already built;
    ``process_file`` (outside ``workdir``) names the job's process while it runs, for an
    edge that restarts after a crash (``lifeline.stop_leftovers``)."""
    cache = dataset_cache_dir(settings.cache_dir, dataset, dataset_path)
    source = open_source(dataset, dataset_path, granted_fields, hmac_key, consent, cache_dir=cache)
    index = index if index is not None else source.index()
    return run_source(spec, source, index, hmac_key, workdir,
                      settings, max_records=dataset.max_records, cancel=cancel, on_progress=on_progress,
                      max_epochs=max_epochs, process_file=process_file, holdback=holdback,
                      feeder=job_feeder(source, settings, cache), privacy=privacy)


def job_feeder(source: Source, settings: Settings, cache: Path) -> Feeder:
    """The job's decoder pool and disk cache, as the edge's [data] settings size them."""
    mib = settings.data.cache_max_mib
    store = RecordStore(cache / "records", mib * 1024 * 1024) if mib > 0 else None
    return Feeder(source, workers=settings.data.workers(), store=store)


class JobRunner:
    """Runs a job of a registered dataset in its own directory under ``jobs_dir`` and
    removes the directory after (unless ``sandbox.unsafe_keep_job_files``)."""

    def __init__(self, datasets: DatasetRegistry, pseudonym_key: bytes, settings: Settings) -> None:
        self.datasets, self.pseudonym_key, self.settings = datasets, pseudonym_key, settings

    def run(self, spec: JobSpec, limits: Limits | None, cancel: threading.Event | None,
            on_progress: ProgressCallback | None) -> RunOutcome:
        dataset = self.datasets.get(spec.dataset)
        workdir = self.settings.jobs_dir / spec.job_id / "work"
        consent = OptOutList.from_file(self.datasets.resolve_opt_out(dataset))
        # the source follows dataset.source (folder, DICOMweb, FHIR export, CSV)
        try:
            return run_job(spec, dataset, self.datasets.resolve(dataset), list(spec.fields), self.pseudonym_key,
                           workdir, self.settings, cancel=cancel, on_progress=on_progress, consent=consent,
                           max_epochs=limits.max_epochs if limits is not None else None,
                           holdback=limits.holdback if limits is not None else None,
                           privacy=limits.privacy if limits is not None else None,
                           process_file=workdir.parent / PROCESS_FILE)  # outside what the job may write
        finally:
            if self.settings.sandbox.unsafe_keep_job_files:
                log.warning("unsafe_keep_job_files: job %s's directory is kept, with what the job printed, "
                            "which may hold record data; never do this with real data", spec.job_id)
            else:
                # Minimum necessary (S2) applies to what stays behind too: the job's
                # stdout may hold record data it printed. Its outputs were read already.
                shutil.rmtree(workdir, onerror=_log_removal_error)
                if trainer_dir(workdir).exists():
                    shutil.rmtree(trainer_dir(workdir), onerror=_log_removal_error)
            remove_inputs(workdir.parent)  # copies of the researcher's own files, kept in the store


def _log_removal_error(function: Any, path: str, excinfo: Any) -> None:
    log.error("could not remove part of a job directory (%s): %s", function.__name__, excinfo[0].__name__)


def run_source(spec: JobSpec, source: Source, index: Index, hmac_key: bytes, workdir: Path, settings: Settings,
               *, max_records: int, cancel: threading.Event | None = None,
               on_progress: ProgressCallback | None = None, max_epochs: int | None = None,
               process_file: Path | None = None, holdback: Holdback | None = None,
               feeder: Feeder | None = None, privacy: PrivacyBudget | None = None) -> RunOutcome:
    """``feeder``: prepares the records (decoder pool, disk cache); closed, its decoders
    stopped, when the job ends, however it ends. None: the broker reads the source itself."""
    try:
        return _run_source(spec, source, index, hmac_key, workdir, settings, max_records=max_records,
                           cancel=cancel, on_progress=on_progress, max_epochs=max_epochs,
                           process_file=process_file, holdback=holdback, feeder=feeder,
                           privacy=privacy)
    finally:
        if feeder is not None:
            feeder.close()
            log.info("job %s: %d records decoded, %d read from the disk cache (%d damaged entries decoded again)",
                     spec.job_id, feeder.decoded, feeder.store_hits, feeder.store_damaged)


def _run_source(spec: JobSpec, source: Source, index: Index, hmac_key: bytes, workdir: Path, settings: Settings,
                *, max_records: int, cancel: threading.Event | None, on_progress: ProgressCallback | None,
                max_epochs: int | None, process_file: Path | None, holdback: Holdback | None,
                feeder: Feeder | None, privacy: PrivacyBudget | None) -> RunOutcome:
    started = _now()
    deadline = time.monotonic() + spec.budget.max_seconds
    private = job_mode(spec.code) == MODE_DP
    if private and privacy is None:  # the policy gate refuses this first; never run one unbudgeted (S4)
        raise SandboxFault("a DP job reached the runner without a privacy budget")
    budget = min(spec.budget.max_records, max_records)
    if private and spec.processes > 1:  # the spec gate refuses this first
        raise SandboxFault("a DP job runs as one process")
    arena = SharedArena.create()
    rank_arenas = [SharedArena.create() for _ in range(spec.processes - 1)]  # ranks 1..N-1
    # Both seeds are keyed: the researcher cannot pick a job id that selects records, nor
    # predict which records are held back from it.
    broker = Broker(source, index, budget, derive_seed(hmac_key, "cohort", spec.job_id), arena,
                    max_epochs=max_epochs,
                    holdback_size=holdback.size(len(index.records)) if holdback is not None else 0,
                    holdback_seed=derive_seed(hmac_key, "holdback", spec.job_id), feeder=feeder,
                    private=private, world_size=spec.processes)
    workdir = Path(workdir)
    trained: TrainerResult | None = None
    try:
        _prepare_workdir(workdir, spec, source, settings)
        if feeder is not None and not private:
            feeder.start()  # decoders start beside the job, in the thread that outlives it
        # This thread starts the job and stays with it until it is dead: the parent-death
        # signal that ties the job to the edge follows the thread that forked it.
        arenas = [arena, *rank_arenas]
        if spec.processes == 1:
            process, parent = _start(spec, workdir, settings, arena)
            parents = [parent]
        else:
            process, parents = _start_ranks(spec, workdir, settings, arenas)
        threads = [threading.Thread(target=broker.serve, args=(parent,), kwargs={"rank": rank, "arena": arenas[rank]},
                                    daemon=True, name=f"broker-{spec.job_id[:8]}-{rank}")
                   for rank, parent in enumerate(parents)]
        for thread in threads:
            thread.start()
        try:
            _record(process, process_file)
            status = _supervise(process, spec.budget.max_seconds, cancel, on_progress, broker)
        finally:
            _kill(process)
            if process_file is not None:
                process_file.unlink(missing_ok=True)
            if feeder is not None and not private:
                feeder.close()  # a broker waiting on a decoder wakes with a fault, then stops
            for parent, thread in zip(parents, threads, strict=True):
                _stop_broker(parent, thread)
        if private and status == "completed" and broker.fault is None and not broker.job_misbehaved:
            # A DP job's records go to its trainer only: the decoders start with it (a lot's
            # records decoded in parallel, later epochs from the disk cache), and stop with it.
            if feeder is not None:
                feeder.start()
            try:
                status, trained = _train(spec, workdir, source, broker, settings, privacy, max_epochs,
                                         _Run(deadline, cancel, on_progress, process_file))
            finally:
                if feeder is not None:
                    feeder.close()
    finally:
        if arena is not None:
            arena.close()
        for extra in rank_arenas:
            if extra is not None:
                extra.close()
    log.info("job %s ended: %s (exit %s)", spec.job_id, status, process.returncode)
    return _outcome(spec, workdir, status, process.returncode, broker, started, trained)


@dataclass(frozen=True)
class _Run:
    deadline: float
    cancel: threading.Event | None
    on_progress: ProgressCallback | None
    process_file: Path | None


def trainer_dir(workdir: Path) -> Path:
    """Beside the job's directory, never inside what the job could write."""
    return workdir.with_name(workdir.name + "-train")


def _train(spec: JobSpec, workdir: Path, source: Source, broker: Broker, settings: Settings,
           privacy: PrivacyBudget | None, max_epochs: int | None, run: _Run) -> tuple[str, TrainerResult]:
    """The second process of a DP job: the edge's trainer, fed lots by the same broker."""
    assert privacy is not None  # run_source refused a DP job without one
    directory = trainer_dir(workdir)
    schema = {name: {"dtype": s.dtype, "shape": list(s.shape), "kind": s.kind} for name, s in source.specs.items()}
    try:
        prepare_trainer(workdir, directory, spec, schema, privacy, len(broker.cohort), max_epochs)
    except NotTrainable as refused:
        return "failed", TrainerResult(None, {}, None, None, refused.message)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    python = settings.sandbox.python or sys.executable
    parent_pid = os.getpid() if settings.sandbox.unsafe_no_airgap else None
    cmd = wrap_command(trainer_command(python, directory, child.fileno(), parent_pid), directory, spec,
                       (child.fileno(),), settings)
    try:
        with open(directory / "stdout.txt", "wb") as out, open(directory / "stderr.txt", "wb") as err:
            process = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=job_env(directory, python),
                                       cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=True)
    except OSError as exc:
        parent.close()
        raise SandboxFault("the trainer process could not be started", hint="check sandbox.python") from exc
    finally:
        child.close()
    thread = threading.Thread(target=broker.serve, args=(parent,), kwargs={"trainer": True}, daemon=True,
                              name=f"broker-train-{spec.job_id[:8]}")
    thread.start()
    try:
        _record(process, run.process_file)
        remaining = max(1, int(run.deadline - time.monotonic()))
        status = _supervise(process, remaining, run.cancel, run.on_progress, broker)
    finally:
        _kill(process)
        if run.process_file is not None:
            run.process_file.unlink(missing_ok=True)
        _stop_broker(parent, thread)
    log.info("job %s: trainer ended %s (exit %s)", spec.job_id, status, process.returncode)
    if broker.fault is not None:
        return "failed", TrainerResult(None, {}, None, None)
    try:
        result = read_trainer(directory, spec, privacy, completed=status == "completed")
    except OutputRefused as refused:
        log.error("job %s: the trainer's outputs were refused: %s", spec.job_id, refused.message)
        return "failed", TrainerResult(None, {}, None, None)
    return (status if result.refusal is None else "failed"), result


# -P: no job-dir entry on sys.path (a file the cell writes cannot shadow a module);
# -s: no user site; -B: no bytecode writes into a read-only Python install.
JOB_PYTHON_FLAGS = ("-P", "-s", "-B")


def job_command_flags() -> list[str]:
    """The interpreter flags of every job process (the environment listing uses them too)."""
    return list(JOB_PYTHON_FLAGS)


def job_command(python: str, fd: int, shm_fd: int | None = None, parent_pid: int | None = None) -> list[str]:
    command = [python, *JOB_PYTHON_FLAGS, "-m", "edge_kernel.inside.job_main", "--fd", str(fd)]
    if shm_fd is not None:
        command += ["--shm-fd", str(shm_fd)]
    return command + ["--parent-pid", str(parent_pid)] if parent_pid is not None else command


def job_env(workdir: Path, python: str) -> dict[str, str]:
    """A clean environment: nothing of the edge's own (keys, proxies, paths) is inherited."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": JOB_THREADS, "MKL_NUM_THREADS": JOB_THREADS,
           "OPENBLAS_NUM_THREADS": JOB_THREADS}
    pythonpath = _pythonpath_for(python)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


@functools.lru_cache(maxsize=8)
def _pythonpath_for(python: str) -> str | None:
    """The folder holding edge_kernel, unless ``python`` already imports this very copy."""
    package = Path(__file__).resolve().parents[1]
    probe = "import importlib.util as u; s = u.find_spec('edge_kernel'); print(s.origin if s else '')"
    try:
        found = subprocess.run([python, "-P", "-s", "-c", probe], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxFault("the job interpreter does not start", hint="check sandbox.python") from exc
    origin = found.stdout.strip()
    if origin and Path(origin).resolve() == package / "__init__.py":
        return None
    return str(package.parent)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _prepare_workdir(workdir: Path, spec: JobSpec, source: Source, settings: Settings) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        # Stale outputs from an earlier run must never be mistaken for this job's.
        raise SandboxFault("the job directory is not empty")
    schema = {name: {"dtype": s.dtype, "shape": list(s.shape), "kind": s.kind} for name, s in source.specs.items()}
    (workdir / "cell.py").write_text(spec.code, "utf-8")
    job: dict[str, Any] = {"job_id": spec.job_id, "params": spec.params, "schema": schema, "epochs": spec.epochs,
                           "mode": job_mode(spec.code), "gpus": job_grant(settings.sandbox).count}
    job.update(_stage_inputs(spec, workdir.parent, settings))
    (workdir / "job.json").write_text(json.dumps(job, indent=2), "utf-8")


def _stage_inputs(spec: JobSpec, job_dir: Path, settings: Settings) -> dict[str, Any]:
    """Artifacts and included files, beside the job's directory (not in it: the job may
    write there), where the launcher binds them into the job's view read-only."""
    inputs: dict[str, Any] = {}
    if spec.artifacts:
        inputs["artifacts"] = ArtifactStore.of(settings).stage(spec, spec.researcher_key_id, job_dir)
    code_path = stage_includes(spec, job_dir)
    if code_path is not None:
        inputs["code_path"] = code_path
    return inputs


def _start(spec: JobSpec, workdir: Path, settings: Settings,
           arena: SharedArena | None) -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    python = settings.sandbox.python or sys.executable
    fd = child.fileno()
    shm_fd = arena.fd if arena is not None else None
    fds = (fd,) if shm_fd is None else (fd, shm_fd)
    # Under the air-gap, rapha-airgap dies with the edge (and its PID namespace with it);
    # without it, the job process must tie itself to the edge.
    parent_pid = os.getpid() if settings.sandbox.unsafe_no_airgap else None
    cmd = wrap_command(job_command(python, fd, shm_fd, parent_pid), workdir, spec, fds, settings)
    try:
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            process = subprocess.Popen(cmd, pass_fds=fds, env=job_env(workdir, python), cwd=workdir,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=True)  # own group: killed as a whole
    except OSError as exc:
        parent.close()
        raise SandboxFault("the job process could not be started", hint="check sandbox.python") from exc
    finally:
        child.close()  # only the job holds its end, so its exit reads as end-of-file
    return process, parent


def ranks_command(python: str, fds: list[int], shm_fds: list[int], parent_pid: int | None = None) -> list[str]:
    """The launcher of a distributed job's ranks (``inside/ranks.py``), one socket and one
    arena per rank."""
    command = [python, *JOB_PYTHON_FLAGS, "-m", "edge_kernel.inside.ranks", "--fds", ",".join(map(str, fds)),
               "--shm-fds", ",".join(map(str, shm_fds))]
    return command + ["--parent-pid", str(parent_pid)] if parent_pid is not None else command


def _start_ranks(spec: JobSpec, workdir: Path, settings: Settings,
                 arenas: list[SharedArena | None]) -> tuple[subprocess.Popen[bytes], list[socket.socket]]:
    """A distributed job: its launcher under one sandbox, a socketpair per rank."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in arenas]
    python = settings.sandbox.python or sys.executable
    fds = [child.fileno() for _, child in pairs]
    # every rank its arena, or none at all (no memfd here: the sockets carry the batches)
    shm_fds = [arena.fd for arena in arenas if arena is not None] if all(arenas) else []
    passed = (*fds, *shm_fds)
    parent_pid = os.getpid() if settings.sandbox.unsafe_no_airgap else None
    cmd = wrap_command(ranks_command(python, fds, shm_fds, parent_pid), workdir, spec, passed, settings)
    try:
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            process = subprocess.Popen(cmd, pass_fds=passed, env=job_env(workdir, python), cwd=workdir,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    except OSError as exc:
        for parent, _ in pairs:
            parent.close()
        raise SandboxFault("the job process could not be started", hint="check sandbox.python") from exc
    finally:
        for _, child in pairs:
            child.close()  # only the ranks hold their ends
    return process, [parent for parent, _ in pairs]


def _record(process: subprocess.Popen[bytes], process_file: Path | None) -> None:
    if process_file is None:
        return
    try:
        write_process_file(process_file, JobProcess.of(process.pid))
    except (OSError, SandboxFault) as exc:
        # A job the next start could not find must not run: it is killed in run_source.
        raise SandboxFault("the job's process file could not be written") from exc


def _supervise(process: subprocess.Popen[bytes], max_seconds: int, cancel: threading.Event | None,
               on_progress: ProgressCallback | None, broker: Broker) -> str:
    deadline = time.monotonic() + max_seconds
    progress = _Progress(on_progress, broker)
    while True:
        try:
            process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # still running: check the clock, cancel and progress below
        else:
            progress.report(final=True)
            return "completed" if process.returncode == 0 else "failed"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if time.monotonic() >= deadline:
            return "timeout"
        progress.report()


class _Progress:
    """Passes the broker's counters on when they change, at most every PROGRESS_SECONDS
    (they are written to the job store, and a loop may be fast). A change held back goes
    on a later poll, so what is stored is never staler than that: a job an edge crash
    cuts off keeps a true count of the records it read."""

    def __init__(self, on_progress: ProgressCallback | None, broker: Broker) -> None:
        self.on_progress, self.broker = on_progress, broker
        self.sent: dict[str, int] = {}
        self.sent_at = -PROGRESS_SECONDS

    def report(self, final: bool = False) -> None:
        current = self.broker.progress()
        now = time.monotonic()
        if self.on_progress is None or current == self.sent:
            return
        if final or now - self.sent_at >= PROGRESS_SECONDS:
            self.on_progress(dict(current))
            self.sent, self.sent_at = current, now


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended between poll and kill: nothing left to stop
        process.wait()


def _stop_broker(parent: socket.socket, thread: threading.Thread) -> None:
    try:
        parent.shutdown(socket.SHUT_RDWR)  # wakes the broker's blocking recv
    except OSError:
        pass  # the broker already closed its end after the job hung up
    thread.join(BROKER_JOIN_SECONDS)
    if thread.is_alive():
        raise SandboxFault("the data broker did not stop")


def _outcome(spec: JobSpec, workdir: Path, status: str, exit_code: int | None, broker: Broker,
             started: str, trained: TrainerResult | None = None) -> RunOutcome:
    if trained is not None:  # DP mode: only the trainer's outputs, never the job process's
        completed = status == "completed" and trained.weights is not None
        return RunOutcome(status=status if completed or status != "completed" else "failed",
                          weights=trained.weights if completed else None,
                          metrics=trained.metrics if completed else {}, error=None, meter=broker.summary(),
                          started=started, finished=_now(), exit_code=exit_code,
                          program=trained.program if completed else None,
                          privacy=trained.privacy if completed else None, refusal=trained.refusal)
    fault = None
    outputs = JobOutputs()
    if broker.fault is not None:
        status, fault = "failed", broker.fault.message
    elif broker.job_misbehaved:
        status, fault = "failed", "the job broke the broker protocol"
    if status in ("completed", "failed"):
        try:
            outputs = read_outputs(workdir, spec, completed=status == "completed")
        except OutputRefused as refused:
            status, fault, outputs = "failed", refused.message, JobOutputs()
    if status != "completed":
        outputs = JobOutputs(error=outputs.error)  # only a completed job releases results
    return RunOutcome(status=status, weights=outputs.weights, metrics=outputs.metrics, error=outputs.error,
                      meter=broker.summary(), started=started, finished=_now(), fault=fault,
                      exit_code=exit_code, program=outputs.program)
