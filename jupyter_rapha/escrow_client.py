"""The researcher's side of the escrow: lock ``price x budget`` for a job before it leaves.

An edge that settles on chain says so in ``GET /v1/edge`` (``settlement``: the contract,
the chain id, the token's decimals); its chain's JSON-RPC endpoint (the edge's own
``/chain`` for the embedded chain) takes the researcher's lock, cancel and withdraw
transactions. The lock's key is ``protocol.escrow.job_key`` of the job id, which the
researcher chooses and signs in the job spec, so the lock is made before the spec is
submitted and the edge finds it by the job alone. The edge runs the job only when the lock
is there, from the chain account it registered for the researcher, at the dataset's price,
for the budget; its release claims the records used and refunds the rest.

The transaction is signed here with the researcher's chain key (``NAME.chain.key`` beside
the signing key, from ``rapha keygen``) and checked with a call first, so a refusal (a
lock already made, say) names the contract's reason and nothing is sent. A balance too
small for the lock is refused before anything is signed, with the amount missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi.abi import decode
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.address import to_checksum_address

from .protocol import escrow_artifact
from .protocol.bounded import recursion_limit_kept
from .protocol.errors import AnchorFault, BadInput
from .protocol.escrow import from_units, job_key, shortfall

with recursion_limit_kept():  # web3 imports py_ecc, which raises the recursion limit (see chain.py)
    from web3 import HTTPProvider, Web3
    from web3.exceptions import Web3Exception

# A lock outlives the job's time budget and the edge's stated margin by this much more, so
# that a job waiting in the edge's queue still finds its lock long enough.
EXTRA_EXPIRY_SECONDS = 24 * 3600
GAS_RESERVE = 400_000  # gas a lock may take (about 162k), with room: kept back from the balance check
TIP_WEI = 10**9
_LOCK_TYPES = ["address", "uint256", "uint256", "uint256", "uint256", "uint8", "uint256", "bytes32"]
_STATES = {0: "free", 1: "locked", 2: "claimed", 3: "cancelled"}


@dataclass(frozen=True)
class Lock:
    job_id: str
    contract: str
    amount_units: int
    price_units: int
    max_records: int
    expiry: int
    tx_hash: str  # "" when the job was locked before (the same spec submitted again)
    decimals: int
    balance_units: int = -1  # the account's balance after the lock; -1 when not read

    def line(self) -> str:
        done = f"in {self.tx_hash}" if self.tx_hash else "(locked before)"
        left = f"; your account now holds {from_units(self.balance_units, self.decimals)}" \
            if self.balance_units >= 0 else ""
        return (f"escrow: locked {from_units(self.amount_units, self.decimals)} for job {self.job_id[:12]}"
                f" ({from_units(self.price_units, self.decimals)} per record x {self.max_records}) {done}{left}")


class EscrowRpc:
    """The escrow contract at ``contract`` over the chain's JSON-RPC at ``rpc_url``."""

    def __init__(self, rpc_url: str, contract: str, *, chain_id: int | None = None, timeout: float = 30,
                 verify: str | bool = True) -> None:
        if not rpc_url.startswith(("http://", "https://")):
            raise BadInput(f"chain RPC URL {rpc_url!r} must be http:// or https://")
        self.rpc_url, self.contract = rpc_url, to_checksum_address(contract)
        self._w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout, "verify": verify},
                                     exception_retry_configuration=None))
        self._abi = Web3().eth.contract(abi=escrow_artifact.ABI)
        self.timeout = timeout
        served = self._ask("read the chain id", lambda: int(self._w3.eth.chain_id))
        if chain_id is not None and served != int(chain_id):
            raise AnchorFault(f"chain RPC {rpc_url} serves chain {served}, the edge settles on chain {chain_id}")
        self.chain_id = served

    def balance(self, address: str) -> int:
        return int(self._ask("read the balance", lambda: int(self._w3.eth.get_balance(to_checksum_address(address)))))

    def lock_of(self, job_id: str) -> dict[str, Any]:
        data = self._data("locks", job_key(job_id))
        raw = self._ask("read the escrow lock", lambda: bytes(self._w3.eth.call({"to": self.contract, "data": data})))
        entry = dict(zip(("researcher", "price", "max_records", "amount", "expiry", "state", "records", "envelope"),
                         decode(_LOCK_TYPES, raw), strict=True))
        entry["researcher"] = to_checksum_address(entry["researcher"])
        entry["state"] = _STATES.get(int(entry["state"]), "unknown")
        return entry

    def lock(self, account: LocalAccount, job_id: str, price_units: int, max_records: int, expiry: int,
             decimals: int) -> Lock:
        """Lock ``price_units x max_records`` for ``job_id`` from ``account`` and wait for it
        to be mined; a job already locked by this account is left as it is."""
        amount = int(price_units) * int(max_records)
        current = self.lock_of(job_id)
        if current["state"] == "locked" and current["researcher"] == account.address:
            return Lock(job_id, self.contract, int(current["amount"]), int(current["price"]),
                        int(current["max_records"]), int(current["expiry"]), "", decimals)
        fees = self._fees()
        balance = self.balance(account.address)
        missing = shortfall(max(0, balance - GAS_RESERVE * fees["maxFeePerGas"]), price_units, max_records)
        if missing:
            raise BadInput(f"deposit too small for the budget: locking {max_records} records at "
                           f"{from_units(price_units, decimals)} needs {from_units(amount, decimals)} (and gas); "
                           f"your chain account {account.address} holds {from_units(balance, decimals)}, "
                           f"{from_units(missing, decimals)} missing",
                           hint="fund the account, or lower the budget (--budget / budget=)")
        data = self._data("lock", job_key(job_id), int(price_units), int(max_records), int(expiry))
        call: dict[str, Any] = {"from": account.address, "to": self.contract, "value": amount, "data": data}
        try:
            self._w3.eth.call(call)  # type: ignore[arg-type]
            gas = int(self._w3.eth.estimate_gas(call))  # type: ignore[arg-type]
        except Web3Exception as exc:
            raise BadInput(f"the escrow contract refuses the lock: {exc}") from None
        nonce = self._ask("read the account nonce",
                          lambda: int(self._w3.eth.get_transaction_count(account.address, "pending")))
        tx = {"to": self.contract, "value": amount, "data": bytes.fromhex(data[2:]), "gas": gas + gas // 5,
              "chainId": self.chain_id, "nonce": nonce, **fees}
        signed = account.sign_transaction(tx)
        tx_hash = self._ask("send the escrow lock", lambda: self._w3.eth.send_raw_transaction(signed.raw_transaction))
        receipt = self._ask("see the escrow lock mined", lambda: self._w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=self.timeout, poll_latency=0.2))
        if int(receipt["status"]) != 1:
            raise AnchorFault("the escrow lock failed on chain")
        return Lock(job_id, self.contract, amount, int(price_units), int(max_records), int(expiry),
                    "0x" + bytes(tx_hash).hex(), decimals, self.balance(account.address))

    def credit(self, address: str) -> int:
        """What the contract holds for ``address`` to withdraw (refunds; an edge's pay)."""
        data = self._data("credit", to_checksum_address(address))
        raw = self._ask("read the escrow credit", lambda: bytes(self._w3.eth.call({"to": self.contract, "data": data})))
        return int(decode(["uint256"], raw)[0])

    def withdraw(self, account: LocalAccount) -> str:
        """Pull this account's credit out of the contract; the transaction hash."""
        data = self._data("withdraw")
        call: dict[str, Any] = {"from": account.address, "to": self.contract, "value": 0, "data": data}
        try:
            gas = int(self._w3.eth.estimate_gas(call))  # type: ignore[arg-type]
        except Web3Exception as exc:
            raise BadInput(f"the escrow contract refuses the withdrawal: {exc}") from None
        nonce = self._ask("read the account nonce",
                          lambda: int(self._w3.eth.get_transaction_count(account.address, "pending")))
        tx = {"to": self.contract, "value": 0, "data": bytes.fromhex(data[2:]), "gas": gas + gas // 5,
              "chainId": self.chain_id, "nonce": nonce, **self._fees()}
        signed = account.sign_transaction(tx)
        tx_hash = self._ask("send the withdrawal", lambda: self._w3.eth.send_raw_transaction(signed.raw_transaction))
        receipt = self._ask("see the withdrawal mined", lambda: self._w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=self.timeout, poll_latency=0.2))
        if int(receipt["status"]) != 1:
            raise AnchorFault("the withdrawal failed on chain")
        return "0x" + bytes(tx_hash).hex()

    def _fees(self) -> dict[str, int]:
        price = self._ask("read the gas price", lambda: int(self._w3.eth.gas_price))
        return {"maxFeePerGas": 2 * price + TIP_WEI, "maxPriorityFeePerGas": TIP_WEI}

    def _data(self, name: str, *args: Any) -> HexStr:
        return HexStr(self._abi.encode_abi(name, args=list(args)))

    def _ask(self, what: str, step: Any) -> Any:
        try:
            return step()
        except requests.Timeout as exc:
            raise AnchorFault(f"cannot {what}: chain RPC {self.rpc_url} did not answer in time") from exc
        except requests.ConnectionError as exc:
            raise AnchorFault(f"cannot {what}: chain RPC {self.rpc_url} is unreachable") from exc
        except (requests.RequestException, Web3Exception, ValueError, KeyError, TypeError) as exc:
            raise AnchorFault(f"cannot {what} at chain RPC {self.rpc_url}", hint=type(exc).__name__) from exc


def lock_for_job(edge_url: str, info: dict[str, Any], offer: dict[str, Any], account: LocalAccount | None,
                 job_id: str, max_records: int, max_seconds: int, *, verify: str | bool = True) -> Lock | None:
    """Before a job on a priced dataset leaves for an edge that settles on chain: lock its
    maximum cost. None when the edge does not settle on chain or the dataset is free."""
    from .protocol.escrow import to_units

    settlement = info.get("settlement")
    if not isinstance(settlement, dict):
        return None
    decimals = int(settlement.get("token_decimals", 18))
    price = to_units(str(offer.get("price_per_record", "0")), decimals)
    if price == 0:
        return None
    if account is None:
        raise BadInput(f"edge {edge_url} settles dataset {offer.get('name')!r} on chain "
                       f"({from_units(price, decimals)} per record) and you have no chain account",
                       hint="run 'rapha keygen' (it adds NAME.chain.key beside your signing key) and give the "
                            "hospital its address")
    rpc = str((info.get("chain") or {}).get("rpc") or "")
    rpc_url = edge_url.rstrip("/") + rpc if rpc.startswith("/") else rpc
    chain_id = settlement.get("chain_id")
    escrow = EscrowRpc(rpc_url, str(settlement["contract"]), chain_id=int(chain_id) if chain_id else None,
                       verify=verify)
    expiry = (int(time.time()) + int(max_seconds) + int(settlement.get("expiry_margin_seconds", 0))
              + EXTRA_EXPIRY_SECONDS)
    return escrow.lock(account, job_id, price, max_records, expiry, decimals)


def escrow_of(client: Any) -> tuple[EscrowRpc, int]:
    """The escrow of the edge ``client`` talks to, and its token's decimals."""
    info = client.edge_info()
    settlement = info.get("settlement")
    if not isinstance(settlement, dict):
        raise BadInput(f"edge {client.url} does not settle on chain")
    rpc = str((info.get("chain") or {}).get("rpc") or "")
    rpc_url = client.url.rstrip("/") + rpc if rpc.startswith("/") else rpc
    chain_id = settlement.get("chain_id")
    return (EscrowRpc(rpc_url, str(settlement["contract"]), chain_id=int(chain_id) if chain_id else None),
            int(settlement.get("token_decimals", 18)))


def statement_of(client: Any, account: LocalAccount, *, withdraw: bool = False) -> dict[str, Any]:
    """The researcher's statement at one edge: each of their jobs there (as the edge lists
    them) with its lock as the chain holds it, their balance and their credit in the
    contract; ``withdraw`` pulls the credit out first."""
    escrow, decimals = escrow_of(client)
    jobs = []
    for job in client.jobs():
        entry = escrow.lock_of(str(job["job_id"]))
        if entry["state"] == "free":
            continue  # a free dataset, or never locked
        paid = int(entry["records"]) * int(entry["price"]) if entry["state"] == "claimed" else 0
        refunded = int(entry["amount"]) - paid if entry["state"] in ("claimed", "cancelled") else 0
        jobs.append({"job_id": job["job_id"], "dataset": job.get("dataset", ""), "job_state": job.get("state", ""),
                     "state": entry["state"], "locked": from_units(entry["amount"], decimals),
                     "records": int(entry["records"]), "paid": from_units(paid, decimals),
                     "refunded": from_units(refunded, decimals), "expiry": int(entry["expiry"]),
                     "mine": entry["researcher"] == account.address})
    document: dict[str, Any] = {"edge": client.url, "contract": escrow.contract, "account": str(account.address),
                                "jobs": jobs}
    if withdraw and escrow.credit(account.address) > 0:
        document["withdrawn"] = escrow.withdraw(account)
    document["credit"] = from_units(escrow.credit(account.address), decimals)
    document["balance"] = from_units(escrow.balance(account.address), decimals)
    return document

