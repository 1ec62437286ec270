"""One decoder process of the broker's pool (``feeder.py``), and its main.

``python -m edge_kernel.data.decoder_process --fd N --edge-pid P``: trusted edge code,
outside the sandbox, started by the broker for one job. It receives a
``record_decoder.FolderDecoder`` once, then record references, and answers each with a
``Prepared`` or the fixed text of the fault it met, in order, over one AF_UNIX socket.
It imports only the decoding modules (not the edge's service), so it starts in well
under a second, and it never runs researcher code.

A decoded record does not travel through the socket: the broker gives each decoder a
ring of slots in a memfd both map (``decoder_ring.py``), names a free
slot with each reference, and the decoder writes the record's arrays straight into it and
answers with a small message. The broker copies the arrays out and frees the slot. Pickling
a record and pushing it through the socket cost more than a copy, and a decoder whose
answers waited, a quarter MiB each, in a full socket buffer until the broker wanted them
could not work ahead of the broker at all (it was blocked in ``write``, measured). A record
that does not fit its slot (not the declared schema; the broker refuses it) or that was
asked for without a free slot is answered through the socket as before.

It writes the disk cache's entries in a background thread (``BackgroundWriter``) and
finishes them when the broker closes its end. It ends with its job (the broker closes
its end, waits briefly, then kills it), with the edge thread that started it (the
parent-death signal), and at once if the edge is already gone when it starts.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import RaphaError, SandboxFault

from .decoder_ring import InSlot, SlotLayout, SlotRing
from .record_decoder import FolderDecoder, Prepared
from .record_store import BackgroundWriter
from .source import RecordRef

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
KILL_WAIT_SECONDS = 5.0
DRAIN_SECONDS = 10.0  # a decoder's last cache writes, at most (the broker's wait is shorter)
class DecoderProcess:
    """The edge's handle on one decoder: tasks out, answers back in the same order."""

    def __init__(self, decoder: FolderDecoder) -> None:
        layout = SlotLayout.of(decoder)
        self.ring = SlotRing(layout, layout.count()) if layout.count() > 0 else None
        self.free = list(range(self.ring.count)) if self.ring is not None else []  # slots not in use
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        fds = (theirs.fileno(),) + ((self.ring.fd,) if self.ring is not None else ())
        try:
            command = [sys.executable, "-s", "-B", "-m", __name__, "--fd", str(theirs.fileno()),
                       "--edge-pid", str(os.getpid())]
            if self.ring is not None:
                command += ["--ring-fd", str(self.ring.fd), "--slots", str(self.ring.count)]
            # the edge's own working directory: a record's location may be relative to it
            self.process = subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            mine.close()
            if self.ring is not None:
                self.ring.close()
            raise SandboxFault("a decoder process could not be started") from exc
        finally:
            theirs.close()
        self.connection = Connection(mine.detach())
        self.in_flight: list[tuple[bytes, int | None]] = []  # (pseudonym, slot) asked for, in order
        self.connection.send(decoder)

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, ref: RecordRef) -> None:
        """Ask for a record: into a free slot if there is one, else through the socket."""
        slot = self.free.pop() if self.free else None
        self.connection.send((ref, slot))
        self.in_flight.append((ref.pseudonym, slot))

    def ready(self) -> bool:
        """Whether the oldest task's answer has come (or the process has gone)."""
        try:
            return bool(self.connection.poll(0))
        except (EOFError, OSError) as exc:
            raise SandboxFault("a decoder process stopped during the job") from exc

    def answer(self, timeout: float) -> tuple[bytes, Prepared | str]:
        """The oldest task's answer; raises SandboxFault if the process died or hung."""
        try:
            if not self.connection.poll(timeout):
                raise SandboxFault("a record took too long to decode")
            found = self.connection.recv()
        except (EOFError, OSError) as exc:
            raise SandboxFault("a decoder process stopped during the job") from exc
        pseudonym, slot = self.in_flight.pop(0)
        if isinstance(found, InSlot):
            if slot is None or found.slot != slot or self.ring is None:
                raise SandboxFault("a decoder process answered out of turn")
            found = replace(found.prepared, arrays=self.ring.take(slot))
        if slot is not None:
            self.free.append(slot)
        return pseudonym, found

    def end(self) -> None:
        """Shut the broker's sending side: the decoder answers what it was asked, finishes
        its cache writes and exits (``wait`` for it, then ``kill``). The receiving side
        stays open, so a broker thread reading an answer is not left on a closed socket."""
        try:
            with socket.socket(fileno=os.dup(self.connection.fileno())) as handle:
                handle.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed or dead already: kill() follows

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        try:
            self.process.kill()
        except ProcessLookupError:
            pass  # it ended by itself
        try:
            self.process.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("decoder process %d did not end after SIGKILL", self.process.pid)
        self.connection.close()
        if self.ring is not None:
            self.ring.close()


def _tie_to_edge(edge_pid: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != edge_pid:  # the edge died before the signal was set
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the edge, which ends us


def _prepare(decoder: FolderDecoder, ref: RecordRef, writer: BackgroundWriter | None) -> Prepared | str:
    try:
        return decoder.prepare(ref, writer)
    except RaphaError as error:
        return error.message  # one of the decoder's own fixed texts
    except Exception as exc:  # any other failure: the record is not served, the job fails
        log.error("decoder failed: %s", type(exc).__name__)  # the type only: a message may quote a header
        return "a record could not be decoded"


def _answer(decoder: FolderDecoder, request: Any, writer: BackgroundWriter | None,
            ring: SlotRing | None) -> Prepared | InSlot | str:
    if not isinstance(request, tuple) or len(request) != 2 or not isinstance(request[0], RecordRef):
        return "unknown request"
    ref, slot = request
    prepared = _prepare(decoder, ref, writer)
    if ring is None or not isinstance(slot, int) or not 0 <= slot < ring.count or isinstance(prepared, str) \
            or not ring.layout.fits(prepared.arrays):
        return prepared  # through the socket; one that is not the schema is refused by the broker
    ring.put(slot, prepared.arrays)
    return InSlot(slot, replace(prepared, arrays={}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--edge-pid", type=int, required=True)
    parser.add_argument("--ring-fd", type=int, default=None)
    parser.add_argument("--slots", type=int, default=0)
    args = parser.parse_args(argv)
    _tie_to_edge(args.edge_pid)
    connection = Connection(args.fd)
    writer: BackgroundWriter | None = None
    try:
        decoder = connection.recv()
        if not isinstance(decoder, FolderDecoder):
            return 2
        writer = BackgroundWriter(idle=True) if decoder.store_root is not None else None
        ring = SlotRing(SlotLayout.of(decoder), args.slots, args.ring_fd) if args.ring_fd is not None else None
        while True:
            connection.send(_answer(decoder, connection.recv(), writer, ring))
    except (EOFError, OSError):
        if writer is not None:  # the broker closed its end: the job is over; finish the cache's writes
            writer.drain(DRAIN_SECONDS)
        return 0


if __name__ == "__main__":
    sys.exit(main())
