"""What the kernel side asks of the proxy: the one interface the cell magic, the dispatch
steps, ``rapha run`` and the progress views call.

Two classes answer it: ``routing.proxy.EdgeProxy`` in-process (no Jupyter server, or in
the server itself), and ``gateways.ServerGateway`` through a Jupyter server's /rapha/api.
So a cell takes one code path whether a server routes its jobs or not, and the catalog
checks, routing and signing happen in ``EdgeProxy`` either way, never in the kernel.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol
from collections.abc import Iterator

from .routing.submission import Submission

Output = Literal["receipt", "metrics", "weights"]


class Gateway(Protocol):
    def edges(self) -> list[dict[str, Any]]:
        """Every configured edge, whether its catalog verified, and what it offers."""
        ...

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets the verified catalogs offer, merged across edges."""
        ...

    def policy(self, site: str) -> dict[str, Any]:
        """The edge's published policy bundle, checked against its pinned key."""
        ...

    def submit(self, submission: Submission) -> list[dict[str, Any]]:
        """``{job_id, site, state}`` for each edge the submission was routed to."""
        ...

    def status(self, job_id: str) -> dict[str, Any]:
        """The edge's status of the job (an id or a unique prefix of one), with its site."""
        ...

    def jobs(self) -> list[dict[str, Any]]:
        """This researcher's jobs at every edge, newest first."""
        ...

    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def job_edge(self, job_id: str) -> dict[str, Any]:
        """``{site, url, public_key (pinned), chain_rpc}``: what verifying the receipt needs."""
        ...

    def output(self, job_id: str, what: Output) -> Any:
        """The receipt or metrics (parsed JSON) or weights (bytes) of a finished job."""
        ...

    def follow(self, job_id: str, after: int = 0, poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """The job's events after ``after``, in order, until its final state."""
        ...
