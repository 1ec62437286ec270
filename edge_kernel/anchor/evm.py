"""RpcAnchor: the anchor over any Ethereum JSON-RPC endpoint (Polygon, Amoy, a node of
one's own, or the embedded chain's ``/chain`` served with writes allowed).

This is what a real deployment configures. Fees follow the chain: EIP-1559 when the
latest block has a base fee, legacy gas price otherwise. Every network step has a
timeout, and every failure leaves as one AnchorFault.
"""

from __future__ import annotations

import threading
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.types import Wei

from jupyter_rapha.protocol.errors import AnchorFault

from .base import (DEFAULT_TIP_WEI, SignedAnchor, anchor_faults, anchor_gas, anchor_result, anchor_transaction,
                   bumped_fees, dynamic_fees, require_digest, signed_fees)

_POLL_SECONDS = 0.2


class RpcAnchor:
    def __init__(self, rpc_url: str, account: LocalAccount, chain_id: int | None = None,
                 timeout: float = 30) -> None:
        if not rpc_url.startswith(("http://", "https://")):
            raise AnchorFault("chain RPC URL must be http:// or https://")
        self._account = account
        self.address: ChecksumAddress = account.address
        self._timeout = float(timeout)
        self._lock = threading.Lock()  # one nonce in flight at a time
        # No retries: a retry ladder would stretch the caller's timeout several-fold.
        self._w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": self._timeout},
                                     exception_retry_configuration=None))
        if chain_id is None:
            with anchor_faults("reach the chain RPC endpoint"):
                chain_id = int(self._w3.eth.chain_id)
        self.chain_id = int(chain_id)

    def anchor(self, digest: bytes) -> dict[str, Any]:
        digest = require_digest(digest)
        with self._lock:
            self._check_chain()
            with anchor_faults("prepare the anchor transaction"):
                tx = self._transaction(digest)
            with anchor_faults("send the anchor transaction"):
                tx_hash = self._w3.eth.send_raw_transaction(self._account.sign_transaction(tx).raw_transaction)
            with anchor_faults("see the anchor transaction mined in time"):
                receipt = self._w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self._timeout, poll_latency=_POLL_SECONDS)
        if receipt["status"] != 1:
            raise AnchorFault("anchor transaction failed on chain")
        return anchor_result(self.chain_id, tx_hash.to_0x_hex(), receipt["blockNumber"])

    # -- BatchAnchor (the outbox's two phases) ------------------------------------------

    def sign_anchor(self, digest: bytes) -> SignedAnchor:
        digest = require_digest(digest)
        with self._lock:
            self._check_chain()
            with anchor_faults("prepare the anchor transaction"):
                tx = self._transaction(digest)
                signed = self._account.sign_transaction(tx)
        return SignedAnchor(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), int(tx["nonce"]))

    def replace_anchor(self, digest: bytes, stuck: SignedAnchor) -> SignedAnchor:
        """The same anchor at the stuck transaction's nonce with fees raised past it, so
        that the node replaces it (an underpriced transaction otherwise waits forever)."""
        digest = require_digest(digest)
        with self._lock:
            self._check_chain()
            with anchor_faults("prepare the replacement anchor transaction"):
                fees = bumped_fees(signed_fees(stuck.raw), self._fees())
                tx = self._transaction(digest, nonce=stuck.nonce, fees=fees)
                signed = self._account.sign_transaction(tx)
        return SignedAnchor(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), int(tx["nonce"]))

    def broadcast(self, raw: bytes) -> None:
        with self._lock:
            try:
                with anchor_faults("send the anchor transaction"):
                    self._w3.eth.send_raw_transaction(raw)
            except AnchorFault:
                # "already known" or "nonce too low" after a crash mid-send: fine when the
                # node has the transaction; anything else stays a failure.
                if not self._known("0x" + keccak(raw).hex()):
                    raise

    def _known(self, tx_hash: str) -> bool:
        try:
            with anchor_faults("look up the anchor transaction"):
                self._w3.eth.get_transaction(HexStr(tx_hash))
            return True
        except AnchorFault as exc:
            if isinstance(exc.__cause__, TransactionNotFound):
                return False
            raise

    def mined_block(self, tx_hash: str) -> int | None:
        try:
            with anchor_faults("look up the anchor transaction"):
                receipt = self._w3.eth.get_transaction_receipt(HexStr(tx_hash))
        except AnchorFault as exc:
            if isinstance(exc.__cause__, TransactionNotFound):
                return None
            raise
        if receipt["status"] != 1:
            raise AnchorFault("anchor transaction failed on chain")
        return int(receipt["blockNumber"])

    def head_block(self) -> int:
        with anchor_faults("read the chain head"):
            return int(self._w3.eth.block_number)

    def confirmed_nonce(self) -> int:
        with anchor_faults("read the account nonce"):
            return int(self._w3.eth.get_transaction_count(self.address, "latest"))

    def _check_chain(self) -> None:
        # A configured chain id that the endpoint does not serve would anchor receipts
        # on a chain their verifiers are told not to look at.
        with anchor_faults("reach the chain RPC endpoint"):
            served = int(self._w3.eth.chain_id)
        if served != self.chain_id:
            raise AnchorFault(f"chain RPC endpoint serves chain {served}, configured {self.chain_id}")

    def _transaction(self, digest: bytes, *, nonce: int | None = None,
                     fees: dict[str, int] | None = None) -> dict[str, Any]:
        eth = self._w3.eth
        if nonce is None:
            nonce = eth.get_transaction_count(self.address, "pending")
        estimate = eth.estimate_gas({"from": self.address, "to": self.address, "value": Wei(0),
                                     "data": HexStr("0x" + digest.hex())})
        tx = anchor_transaction(self.address, digest, nonce=nonce, chain_id=self.chain_id,
                                gas=anchor_gas(estimate, digest), fees=fees if fees is not None else self._fees())
        tx.pop("from")
        return tx

    def _fees(self) -> dict[str, int]:
        latest = self._w3.eth.get_block("latest")
        base_fee = latest.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": int(self._w3.eth.gas_price)}
        try:
            tip = int(self._w3.eth.max_priority_fee)
        except Web3RPCError:
            tip = DEFAULT_TIP_WEI  # nodes that serve neither eth_maxPriorityFeePerGas nor eth_feeHistory
        return dynamic_fees(int(base_fee), tip)
