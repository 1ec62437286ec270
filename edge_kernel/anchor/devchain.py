"""The embedded dev chain: eth-tester's PyEVM chain, kept across restarts by a journal.

Receipts name a transaction hash and a block number, so a chain that forgot its blocks
on restart would turn every earlier receipt into a failed verification. Every
transaction is therefore written (raw signed bytes, block timestamp, expected hash and
block) to an append-only, fsynced journal *before* it is sent, and the journal is
replayed on start. Genesis timestamp, block timestamps and the per-block randomness are
pinned, so a replay reproduces the same transactions, blocks and block hashes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from jupyter_rapha.protocol.bounded import recursion_limit_kept
from jupyter_rapha.protocol.errors import AnchorFault

with recursion_limit_kept():  # py-evm raises it to 12288 on import (see anchor/__init__)
    from eth.vm.forks.prague import PragueVM
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import get_default_genesis_params
    from eth_tester.exceptions import TransactionNotFound

from .base import (DEFAULT_TIP_WEI, SignedAnchor, anchor_faults, anchor_gas, anchor_result, anchor_transaction,
                   dynamic_fees, require_digest)
from .rpcserver import dispatch, rpc_methods

JOURNAL_NAME = "journal.jsonl"
JOURNAL_FORMAT = "rapha-devchain-journal/v1"
FUNDING_WEI = 100 * 10**18
_MIX_DOMAIN = b"rapha-devchain mix_hash\0"


class _PinnedBackend(PyEVMBackend):
    """PyEVMBackend whose blocks take their mix_hash from the parent hash instead of
    os.urandom, so replayed blocks get the same hashes as the originals."""

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = b"\0" * 20) -> tuple[bytes, ...]:
        hashes = []
        for _ in range(num_blocks):
            kwargs: dict[str, Any] = {"coinbase": coinbase,
                                      "mix_hash": keccak(_MIX_DOMAIN + self.chain.header.parent_hash)}
            if isinstance(self.chain.get_vm(), PragueVM):
                kwargs["blob_gas_used"] = 0  # blob transactions are refused before they get here
            hashes.append(self.chain.mine_block(**kwargs).hash)
        return tuple(hashes)


class Journal:
    """Append-only JSON lines: a header, then one line per transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = self.path.read_bytes() if self.path.exists() else b""
        complete, _, torn = body.rpartition(b"\n")
        if torn:
            # A final line without its newline: the process died mid-append, before the
            # send, so the transaction was never mined.
            self.truncate(len(complete) + 1 if complete else 0)
        if not complete:
            header = {"format": JOURNAL_FORMAT, "genesis_timestamp": int(time.time())}
            self.append(header)
            return header, []
        records = [self._parse(index, line) for index, line in enumerate(complete.split(b"\n"))]
        header = records.pop(0)
        if header.get("format") != JOURNAL_FORMAT or not isinstance(header.get("genesis_timestamp"), int):
            raise AnchorFault("embedded chain journal has no valid header")
        return header, records

    @staticmethod
    def _parse(index: int, line: bytes) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise AnchorFault(f"embedded chain journal line {index + 1} is corrupt")
        return record

    def append(self, record: dict[str, Any]) -> int:
        """Write and fsync one line; return the offset before it (for ``truncate``)."""
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            offset = os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return offset

    def truncate(self, offset: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())


class EmbeddedChain:
    """A one-process EVM chain that implements Anchor and serves read-only JSON-RPC.

    ``allow_writes`` additionally serves the methods a wallet needs to send
    transactions (for RpcAnchor against this chain); the edge's public endpoint keeps it
    off so that nobody else can add blocks to the edge's chain.
    """

    def __init__(self, state_dir: Path, account: LocalAccount, *, allow_writes: bool = False) -> None:
        self._lock = threading.RLock()
        self._account = account
        self.address = str(account.address)
        self._journal = Journal(Path(state_dir) / JOURNAL_NAME)
        with anchor_faults("open the embedded chain state"):
            self._journal.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            header, records = self._journal.load()
            genesis = get_default_genesis_params({"timestamp": header["genesis_timestamp"]})
            self._backend = _PinnedBackend(genesis_parameters=genesis)
            self._tester = EthereumTester(self._backend)
            self.chain_id = int(self._backend.chain.chain_id)
            self._replay(records)
            self._fund()
        self._methods = rpc_methods(self, allow_writes=allow_writes)

    # -- Anchor ------------------------------------------------------------------------

    def anchor(self, digest: bytes) -> dict[str, Any]:
        with self._lock:
            signed = self.sign_anchor(digest)
            with anchor_faults("send the anchor transaction"):
                tx_hash, block_number = self.submit_raw(signed.raw)
        return anchor_result(self.chain_id, tx_hash, block_number)

    # -- BatchAnchor (the outbox's two phases) ------------------------------------------

    def sign_anchor(self, digest: bytes) -> SignedAnchor:
        digest = require_digest(digest)
        with self._lock, anchor_faults("sign the anchor transaction"):
            nonce = self._tester.get_nonce(self.address)
            tx = anchor_transaction(self.address, digest, nonce=nonce,
                                    chain_id=self.chain_id, gas=self._estimate_anchor_gas(digest),
                                    fees=dynamic_fees(self.base_fee(), DEFAULT_TIP_WEI))
            tx.pop("from")
            raw = bytes(self._account.sign_transaction(tx).raw_transaction)
        return SignedAnchor(raw, "0x" + keccak(raw).hex(), nonce)

    def broadcast(self, raw: bytes) -> None:
        with self._lock:
            if self.mined_block("0x" + keccak(raw).hex()) is not None:
                return  # sent before a crash: sending again must not be an error
            with anchor_faults("send the anchor transaction"):
                self.submit_raw(raw)

    def mined_block(self, tx_hash: str) -> int | None:
        with self._lock:
            try:
                receipt = self._tester.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None
        if receipt.get("status", 1) != 1:
            raise AnchorFault("anchor transaction failed on chain")
        return int(receipt["block_number"])

    def head_block(self) -> int:
        with self._lock:
            return int(self._tester.get_block_by_number("latest")["number"])

    def confirmed_nonce(self) -> int:
        with self._lock:
            return int(self._tester.get_nonce(self.address))

    def _estimate_anchor_gas(self, digest: bytes) -> int:
        estimate = self._tester.estimate_gas(
            {"from": self.address, "to": self.address, "value": 0, "data": "0x" + digest.hex()})
        return anchor_gas(estimate, digest)

    # -- JSON-RPC ----------------------------------------------------------------------

    def serve_escrow(self, address: str, selectors: frozenset[bytes]) -> None:
        """Take, on the public endpoint too, the escrow operations a researcher's wallet
        sends to the contract at ``address`` (``rpcserver.escrow_write_methods``)."""
        from .rpcserver import escrow_write_methods

        with self._lock:
            methods = dict(self._methods)
            for name, method in escrow_write_methods(self, address, selectors).items():
                methods.setdefault(name, method)  # an allow_writes chain keeps its full methods
            self._methods = methods

    def rpc(self, request: Any) -> Any:
        with self._lock:
            return dispatch(self._methods, request)

    # -- shared by anchor(), funding and eth_sendRawTransaction -------------------------

    @property
    def tester(self) -> EthereumTester:
        return self._tester

    def base_fee(self) -> int:
        return int(self._tester.get_block_by_number("pending")["base_fee_per_gas"])

    def submit_raw(self, raw: bytes) -> tuple[str, int]:
        """Journal, then mine, one signed transaction in its own block."""
        if raw[:1] == b"\x03":
            raise AnchorFault("blob transactions are not accepted by the embedded chain")
        with self._lock:
            latest = self._tester.get_block_by_number("latest")
            record = {"raw": "0x" + raw.hex(), "timestamp": max(int(time.time()), latest["timestamp"] + 1),
                      "tx_hash": "0x" + keccak(raw).hex(), "block_number": latest["number"] + 1}
            offset = self._journal.append(record)
            try:
                self._apply(record)
            except BaseException:
                self._journal.truncate(offset)  # never mined: must not be replayed either
                raise
            return record["tx_hash"], record["block_number"]

    def _apply(self, record: dict[str, Any]) -> None:
        self._backend.chain.set_header_timestamp(record["timestamp"])
        tx_hash = self._tester.send_raw_transaction(record["raw"])
        receipt = self._tester.get_transaction_receipt(tx_hash)
        if tx_hash != record["tx_hash"] or receipt["block_number"] != record["block_number"]:
            raise AnchorFault("embedded chain did not mine the transaction where the journal expects it")

    def _replay(self, records: list[dict[str, Any]]) -> None:
        # Every journaled transaction was mined before anyone saw its hash (a refused
        # one is cut from the journal at once), so one that does not replay means the
        # journal was damaged: stop rather than serve a chain that forgot anchors.
        for index, record in enumerate(records):
            try:
                self._apply(record)
            except Exception:
                raise AnchorFault(f"embedded chain journal entry {index + 1} does not replay",
                                  hint="restore the chain state directory from backup") from None

    def _fund(self) -> None:
        """Give the edge account gas money from eth-tester's first pre-funded account.
        The funding transfer is journaled like every other transaction."""
        if self._tester.get_balance(self.address) >= FUNDING_WEI // 10:
            return
        self.fund(self.address, FUNDING_WEI)

    def fund(self, address: str, value: int) -> str:
        """Send ``value`` wei to ``address`` from eth-tester's first pre-funded account
        (the edge's gas money; a demo researcher's escrow deposits), journaled."""
        funder = self._backend.account_keys[0]
        funder_address = funder.public_key.to_checksum_address()
        with self._lock:
            tx = {"to": address, "value": int(value), "gas": 21000, "chainId": self.chain_id,
                  "nonce": self._tester.get_nonce(funder_address), "data": b"",
                  **dynamic_fees(self.base_fee(), DEFAULT_TIP_WEI)}
            from eth_account import Account  # local: only the funding path signs as the tester

            return self.submit_raw(bytes(Account.sign_transaction(tx, funder.to_bytes()).raw_transaction))[0]
