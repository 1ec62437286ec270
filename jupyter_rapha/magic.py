"""``%%rapha_train``: send a training cell to an edge (or dry-run it here) from a notebook.

The cell body is shipped verbatim as the job's code, so it must be self-contained: the
edge sees nothing of the notebook but the cell. Errors are shown as one short message
(gate reasons, or "ValueError at line 12 of the cell"), never as a traceback through
this module, because the interesting part is what the hospital said, not where we were.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .protocol.errors import BadInput, GateDenied, RaphaError

if TYPE_CHECKING:
    from .gateway import Gateway

RESULT_VAR = "_rapha_result"
CELL_FIRST_LINE = 2  # the cell body's line 1 is the editor's line 2, under the %%rapha_train line


class RaphaCellError(Exception):
    """Raised from a cell so the cell is marked failed, rendered without a traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom error display
        return self.lines


def error_lines(exc: RaphaError, source: str | None = None, first_line: int = 1) -> list[str]:
    """What a researcher sees. For a failed cell, ``source`` is the researcher's own copy of
    it (never sent back by the edge), and ``first_line`` the editor's number of its first
    line (2 in a notebook cell, below the %%rapha_train line). A failed job's line is the
    editor's already (the job spec carries ``cell_first_line``); ``first_line`` finds it
    in ``source`` to quote it."""
    from .client import JobFailed

    if isinstance(exc, GateDenied):
        lines = [f"rapha: {exc.message}"]
        lines += [f"  - {reason}" for reason in exc.reasons if reason != exc.message]
        return lines
    if isinstance(exc, JobFailed):
        return _cell_error_lines(exc, source, first_line)
    return [f"rapha: {exc.diagnostics()}"]


def _cell_error_lines(exc: Any, source: str | None, first_line: int) -> list[str]:
    if not exc.line or not exc.error_type:
        return [f"rapha: the job failed {exc.where}: {exc.message}"]
    line, index = exc.line, exc.line - first_line  # index: the line in our copy of the code
    detail = f": {exc.detail}" if exc.detail else ""
    lines = [f"rapha: the job failed {exc.where}: {exc.error_type} at line {line} of the cell{detail}"]
    text = source.splitlines() if source is not None else []
    if 0 <= index < len(text) and text[index].strip():
        lines.append(f"    {line} | {text[index].rstrip()[:160]}")
    return lines


def bind_returns(namespace: dict[str, Any], name: str, state_dict: dict[str, Any]) -> str:
    """Load weights into an existing module named ``name``, or bind the state dict to it."""
    if not name.isidentifier():
        raise BadInput(f"--returns {name!r} is not a Python name")
    torch = sys.modules.get("torch")  # if torch was never imported, no module can exist
    target = namespace.get(name)
    if torch is not None and isinstance(target, torch.nn.Module):
        try:
            target.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise BadInput(f"the returned weights do not fit {name}: {str(exc).splitlines()[0]}") from exc
        return f"weights loaded into {name}"
    namespace[name] = state_dict
    return f"{name} = state dict of {len(state_dict)} tensors"


@magics_class
class RaphaMagics(Magics):
    def _user_namespace(self) -> dict[str, Any]:
        if self.shell is None:  # only a RaphaMagics built by hand, outside IPython, has no shell
            raise BadInput("the rapha magics run inside IPython: %load_ext jupyter_rapha")
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    @magic_arguments()
    @argument("--edge", default="", help="edge URL, e.g. http://127.0.0.1:8470 (under Jupyter: picks that edge)")
    @argument("--site", default="", help="under Jupyter: the configured edge to run at")
    @argument("--sites", default="", choices=["", "all"], help="'all': one job at every edge offering the dataset")
    @argument("--dataset", required=True, help="dataset name in the edge's catalog")
    @argument("--budget", type=int, required=True, help="most records the job may use")
    @argument("--epochs", type=int, default=1, help="passes over the cohort (rapha.epochs)")
    @argument("--param", action="append", nargs="+", default=[], metavar="K=V", help="job parameter")
    @argument("--returns", default="", metavar="VAR", help="load the weights into VAR")
    @argument("--local", action="store_true", help="dry run here on synthetic data")
    @argument("--key", default="", help="outside Jupyter: researcher key (default $RAPHA_KEY or ~/.config/rapha); "
              "under a Jupyter server its extension holds the key")
    @argument("--fields", default="", help="comma-separated fields (default: all in the schema)")
    @argument("--max-seconds", type=int, default=3600, help="time budget of the job")
    @argument("--processes", type=int, default=1,
              help="job processes under one sandbox, ranks of one torch.distributed group (rapha.rank, "
                   "rapha.world_size); the edge's sandbox.max_processes caps it")
    @argument("--schema", default="", help="--local only: dataset schema as JSON instead of the catalog")
    @argument("--seed", type=int, default=0, help="--local only: seed of the synthetic data")
    @argument("--no-preflight", action="store_true",
              help="send the cell without the local scan and policy dry run (the edge still decides)")
    @argument("--artifact", action="append", default=[], metavar="NAME=PATH",
              help="safetensors weights the job reads with rapha.artifact(NAME); repeatable")
    @argument("--include", action="append", default=[], metavar="PATH",
              help="a .py file or a folder of them that travels with the cell, importable by its name; repeatable")
    @cell_magic
    def rapha_train(self, line: str, cell: str) -> Any:
        """Train the cell's code at an edge (or locally with --local)."""
        namespace = self._user_namespace()
        namespace[RESULT_VAR] = None
        try:
            args = parse_argstring(self.rapha_train, line)
            result = self._train(args, cell, namespace)
            first = result[0] if isinstance(result, list) else result  # sites=all: one result per edge
            return _finish(namespace, args.returns, result, first.state_dict)
        except RaphaError as exc:
            raise RaphaCellError(error_lines(exc, source=cell, first_line=CELL_FIRST_LINE)) from None

    def _train(self, args: Any, cell: str, namespace: dict[str, Any]) -> Any:
        from .inputs import parse_artifact_args, read_includes
        from .training import TrainRequest, parse_params

        request = TrainRequest(
            code=cell, dataset=args.dataset, budget=args.budget, epochs=args.epochs,
            params=parse_params([p for group in args.param for p in group]),
            fields=[f.strip() for f in args.fields.split(",") if f.strip()] or None,
            max_seconds=args.max_seconds, cell_first_line=CELL_FIRST_LINE,
            artifacts=parse_artifact_args(args.artifact), includes=read_includes(args.include),
            processes=args.processes,
        )
        if args.local:
            return self._local(args, request, namespace)
        return self._remote(args, request)

    def _local(self, args: Any, request: Any, namespace: dict[str, Any]) -> Any:
        from .local import environment_warnings
        from .local_chart import LocalChart
        from .progress import widgets_render
        from .training import train_local

        schema = _schema_arg(args.schema) if args.schema else self._schema(args)
        for warning in environment_warnings(request.code, self._environments(args), CELL_FIRST_LINE):
            print(f"rapha: warning: {warning}")
        chart = LocalChart(request.epochs, widget=widgets_render())  # live: the values are synthetic, local
        result = train_local(request, namespace, schema or {}, seed=args.seed, on_log=chart.logged)
        chart.finish()
        print(f"rapha: local dry run on {result.extra['cohort_size']} synthetic records, "
              f"{result.extra['records_used']} used; nothing left this machine")
        return result

    def _environments(self, args: Any) -> list[tuple[str, Any]]:
        """The signed environment listings of the edges offering the dataset, for --local to
        compare with this kernel; none when the dry run has only --schema and no edge."""
        from .dispatch import edge_environment, target_edges
        from .gateways import find_server

        if args.schema and not args.edge and find_server() is None:
            return []
        try:
            gateway, site = self._gateway(args)
            found = [(entry["name"], edge_environment(entry)) for entry in
                     target_edges(gateway, args.dataset, args.site or site)]
        except RaphaError as exc:  # advice only: the dry run itself needs no edge when given --schema
            print(f"rapha: warning: the edge's environment was not compared with this kernel's: {exc.diagnostics()}")
            return []
        return [(name, environment) for name, environment in found if environment is not None]

    def _remote(self, args: Any, request: Any) -> Any:
        """Through the Jupyter server's extension, or with no server the same proxy
        in-process: the edge's attestation is shown and the cell preflighted before it is
        signed and sent."""
        from .dispatch import check_cell, ship

        gateway, site = self._gateway(args)
        wanted = args.site or site
        check_cell(gateway, request, wanted, _say, run_preflight=not args.no_preflight)
        results = ship(gateway, request, wanted, args.sites == "all",
                       lambda job_id, where: _collect(gateway, job_id, where, request.epochs))
        return results[0] if len(results) == 1 else results

    def _gateway(self, args: Any) -> tuple[Gateway, str | None]:
        """The Jupyter server's extension when this kernel runs under one, else the same
        proxy in-process for the one edge named by --edge."""
        from .gateways import find_server, in_process
        from .keystore import load_key

        server = find_server()
        if server is not None:
            if getattr(args, "key", ""):
                # Silently signing with the server's key instead would spend another identity's budget.
                raise BadInput("--key is not used under a Jupyter server: its rapha extension holds the key "
                               "and signs for you", hint="leave --key out, or set c.RaphaExtension.key_path "
                               "in jupyter_server_config.py and restart the server")
            return server, (args.edge or None)
        if not args.edge:
            raise BadInput("--edge URL is needed outside a Jupyter server with the rapha extension")
        return in_process(args.edge, load_key(args.key or None)), None

    def _schema(self, args: Any) -> dict[str, Any]:
        from .gateways import find_server

        gateway = find_server()
        if gateway is None:
            return dict(self._client(args).dataset(args.dataset).get("schema") or {})
        for entry in gateway.datasets():
            if entry["name"] == args.dataset:
                return dict(entry.get("schema") or next(iter(entry["offers"].values()))["schema"])
        raise BadInput(f"no edge offers a dataset named {args.dataset!r}; pass --schema JSON for a dry run")

    @magic_arguments()
    @argument("--edge", default="", help="outside Jupyter: the edge URL")
    @argument("--key", default="", help="outside Jupyter: researcher key file")
    @line_magic
    def rapha_jobs(self, line: str) -> Any:
        """List your jobs at every configured edge: id, edge, dataset, state."""
        try:
            gateway, _ = self._gateway(parse_argstring(self.rapha_jobs, line))
            jobs = gateway.jobs()
        except RaphaError as exc:
            raise RaphaCellError(error_lines(exc)) from None
        for job in jobs:
            state = str(job.get("state", ""))
            if job.get("edge_unreachable"):  # listed as last seen: the edge did not answer now
                state = f"edge unreachable (last seen: {state})"
            print(f"{job['job_id']}  {job.get('site', ''):<10} {job.get('dataset', ''):<16} "
                  f"{state:<10} {job.get('updated', '')}")
        return jobs

    @magic_arguments()
    @argument("job_id", help="the job to reattach to (see %%rapha_jobs)")
    @argument("--returns", default="", metavar="VAR", help="load the weights into VAR")
    @argument("--edge", default="", help="outside Jupyter: the edge URL")
    @argument("--key", default="", help="outside Jupyter: researcher key file")
    @line_magic
    def rapha_attach(self, line: str) -> Any:
        """Reattach to a job (after closing the notebook or restarting the kernel): live
        progress, then weights, metrics and the verified receipt, as if never detached."""
        namespace = self._user_namespace()
        try:
            args = parse_argstring(self.rapha_attach, line)
            gateway, _ = self._gateway(args)
            status = gateway.status(args.job_id)  # a unique prefix of the id is enough
            job_id = str(status.get("job_id") or args.job_id)
            # the edge keeps the epochs the job asked for: epoch k/N and an ETA, as when it was submitted
            result = _collect(gateway, job_id, status.get("site", ""), _epochs_asked(status))
            return _finish(namespace, args.returns, result, result.state_dict)
        except RaphaError as exc:
            raise RaphaCellError(error_lines(exc)) from None

    def _client(self, args: Any) -> Any:
        from .client import EdgeClient
        from .keystore import load_key

        if not args.edge:
            raise BadInput("--edge URL is needed (or --local with --schema JSON)")
        return EdgeClient(args.edge, load_key(args.key or None))


def _say(line: str) -> None:
    print(f"rapha: {line}")


def _epochs_asked(status: dict[str, Any]) -> int:
    epochs = status.get("epochs_asked")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else 0


def _schema_arg(text: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise BadInput('--schema must be JSON like {"image": {"dtype": "float32", "shape": [1,32,32]}}') from exc
    if not isinstance(schema, dict):
        raise BadInput("--schema must be a JSON object of fields")
    return schema


def _collect(gateway: Gateway, job_id: str, site: str, epochs: int) -> Any:
    from .progress import collect_watched, progress_view

    result = collect_watched(gateway, job_id, progress_view(job_id, site, epochs))
    print(f"rapha: job {result.job_id}{' at ' + site if site else ''} completed; {_verdict(result)}")
    if result.privacy_line:  # a DP job: what the edge's trainer spent of the budget
        print(f"rapha: {result.privacy_line}")
    return result


def _verdict(result: Any) -> str:
    if result.verified:  # "receipt verified", or "receipt verified, with warnings: attestation (UNSAFE)"
        label: str = result.receipt_widget.verdict.label
        return "receipt " + label
    if result.receipt_widget.pending:  # signed and checked; only the chain transaction is still to come
        return (f"signature verified; anchor pending: fetch the receipt again later with "
                f"%rapha_attach {result.job_id} (or `rapha fetch {result.job_id} --edge {result.edge_url} --out DIR`)")
    return "receipt did NOT verify: " + ", ".join(
        c.name for c in getattr(result.verification, "failures", lambda: [])())


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(RaphaMagics)


def _finish(namespace: dict[str, Any], returns: str | None, result: Any, state_dict: Any) -> Any:
    """Bind the weights to ``--returns`` and publish the result as ``_rapha_result``."""
    message = bind_returns(namespace, returns, state_dict) if returns else ""
    namespace[RESULT_VAR] = result
    if message:
        print(f"rapha: {message}")
    return result
