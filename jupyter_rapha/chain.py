"""Read an anchor transaction from a chain, for receipt verification.

The pure check lives in ``jupyter_rapha.protocol.receipt``; this module only asks a
JSON-RPC endpoint what it knows about one transaction and hands back an
``AnchorObservation``. Every network or node failure becomes one AnchorFault whose
message says what went wrong (unreachable, timeout, not found, bad answer).
"""

from __future__ import annotations

import re
from typing import Any

import requests
from eth_typing import HexStr

from jupyter_rapha.protocol.bounded import recursion_limit_kept
from jupyter_rapha.protocol.errors import AnchorFault

# web3 imports py_ecc, which raises the recursion limit to 100000; C code bounded by it
# (json) would then overflow the C stack on a hostile answer instead of raising.
with recursion_limit_kept():
    from web3 import HTTPProvider, Web3
    from web3.exceptions import TransactionNotFound, Web3Exception
from jupyter_rapha.protocol.escrow import ClaimLog, ClaimObservation
from jupyter_rapha.protocol.receipt import AnchorObservation

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


def observe_anchor(rpc_url: str, tx_hash: str, timeout: float = 10) -> AnchorObservation:
    """What the chain at ``rpc_url`` says about ``tx_hash``; ``timeout`` bounds each
    of the three requests made."""
    if not isinstance(tx_hash, str) or not _TX_HASH.match(tx_hash):
        raise AnchorFault("the anchor names a malformed transaction hash")
    if not rpc_url.startswith(("http://", "https://")):
        raise AnchorFault("chain RPC URL must be http:// or https://")
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout},
                           exception_retry_configuration=None))
    try:
        chain_id = int(w3.eth.chain_id)
        tx = w3.eth.get_transaction(HexStr(tx_hash))
        head = int(w3.eth.block_number)
        return _observation(chain_id, tx, head)
    except TransactionNotFound:
        raise AnchorFault(f"anchor transaction {tx_hash} not found on the chain at {rpc_url}") from None
    except requests.Timeout as exc:
        raise AnchorFault(f"chain RPC {rpc_url} did not answer within {timeout:g} s") from exc
    except requests.ConnectionError as exc:
        raise AnchorFault(f"chain RPC {rpc_url} is unreachable") from exc
    except (requests.RequestException, Web3Exception, ValueError, KeyError, TypeError) as exc:
        raise AnchorFault(f"chain RPC {rpc_url} gave an unusable answer", hint=type(exc).__name__) from exc


def _observation(chain_id: int, tx: Any, head: int) -> AnchorObservation:
    # The hash is taken from the answer, not the question: a node that answers about
    # another transaction is then caught by the comparison with the receipt.
    block_number = tx.get("blockNumber")
    return AnchorObservation(
        chain_id=chain_id,
        tx_hash="0x" + bytes(tx["hash"]).hex(),
        block_number=None if block_number is None else int(block_number),
        sender=str(tx["from"]),
        data=bytes(tx["input"]),
        head_block=head,
    )


def observe_claim(rpc_url: str, tx_hash: str, timeout: float = 10) -> ClaimObservation:
    """What the chain at ``rpc_url`` says about the escrow claim ``tx_hash`` (its receipt)."""
    if not isinstance(tx_hash, str) or not _TX_HASH.match(tx_hash):
        raise AnchorFault("the settlement claim names a malformed transaction hash")
    if not rpc_url.startswith(("http://", "https://")):
        raise AnchorFault("chain RPC URL must be http:// or https://")
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout},
                           exception_retry_configuration=None))
    try:
        chain_id = int(w3.eth.chain_id)
        receipt = w3.eth.get_transaction_receipt(HexStr(tx_hash))
        logs = tuple(ClaimLog(str(log["address"]), tuple("0x" + bytes(t).hex() for t in log["topics"]),
                              bytes(log["data"])) for log in receipt["logs"])
        block_number = receipt.get("blockNumber")
        return ClaimObservation(chain_id=chain_id, tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
                                block_number=None if block_number is None else int(block_number),
                                to=str(receipt.get("to") or ""), status=int(receipt["status"]), logs=logs)
    except TransactionNotFound:
        raise AnchorFault(f"settlement claim {tx_hash} not found on the chain at {rpc_url}") from None
    except requests.Timeout as exc:
        raise AnchorFault(f"chain RPC {rpc_url} did not answer within {timeout:g} s") from exc
    except requests.ConnectionError as exc:
        raise AnchorFault(f"chain RPC {rpc_url} is unreachable") from exc
    except (requests.RequestException, Web3Exception, ValueError, KeyError, TypeError) as exc:
        raise AnchorFault(f"chain RPC {rpc_url} gave an unusable answer", hint=type(exc).__name__) from exc
