"""The edge's anchoring layer: chain account file, the journaled embedded chain, its
JSON-RPC face, and RpcAnchor against that chain over loopback HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from edge_kernel.anchor.account import create_chain_account, load_chain_account
from edge_kernel.anchor.base import Anchor
from edge_kernel.anchor.devchain import JOURNAL_NAME, EmbeddedChain
from edge_kernel.anchor.evm import RpcAnchor
from edge_kernel.anchor.rpcserver import MAX_BODY_BYTES, rpc_http_body, serve_chain
from jupyter_rapha.protocol.errors import AnchorFault, BadInput

WRITE_METHODS = ["eth_sendRawTransaction", "eth_getTransactionCount", "eth_gasPrice", "eth_estimateGas",
                 "eth_feeHistory", "eth_maxPriorityFeePerGas"]


def digest(n: int) -> bytes:
    return hashlib.sha256(f"envelope {n}".encode()).digest()


def call(chain, method, *params):
    answer = chain.rpc({"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert answer["id"] == 7
    return answer


@pytest.fixture
def account():
    return Account.create()


@pytest.fixture
def chain(tmp_path, account):
    return EmbeddedChain(tmp_path / "chain", account)


# -- account file --------------------------------------------------------------------------

def test_chain_account_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "chain.key"
    address = create_chain_account(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_chain_account(path).address == address and Web3.is_checksum_address(address)
    with pytest.raises(BadInput, match="already exists"):
        create_chain_account(path)
    assert load_chain_account(path).address == address


def test_chain_account_refuses_readable_missing_or_malformed_keys(tmp_path):
    path = tmp_path / "chain.key"
    create_chain_account(path)
    os.chmod(path, 0o644)
    with pytest.raises(BadInput, match="other users"):
        load_chain_account(path)
    with pytest.raises(BadInput, match="cannot read"):
        load_chain_account(tmp_path / "absent.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    os.chmod(bad, 0o600)
    with pytest.raises(BadInput, match="not a secp256k1"):
        load_chain_account(bad)


# -- anchoring on the embedded chain -----------------------------------------------------

def test_anchor_is_a_zero_value_self_transaction_carrying_the_digest(chain, account):
    assert isinstance(chain, Anchor)
    result = chain.anchor(digest(1))
    assert set(result) == {"method", "chain_id", "tx_hash", "block_number"}
    assert result["method"] == "evm-tx" and result["chain_id"] == chain.chain_id
    tx = call(chain, "eth_getTransactionByHash", result["tx_hash"])["result"]
    assert tx["from"] == tx["to"] == account.address == chain.address
    assert tx["value"] == "0x0" and tx["input"] == "0x" + digest(1).hex()
    assert int(tx["blockNumber"], 16) == result["block_number"]
    receipt = call(chain, "eth_getTransactionReceipt", result["tx_hash"])["result"]
    assert receipt["status"] == "0x1"


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33, "ab" * 32])
def test_anchor_refuses_anything_but_32_bytes(chain, bad):
    with pytest.raises(AnchorFault, match="32 bytes"):
        chain.anchor(bad)


def test_chain_survives_restart_with_same_hashes_blocks_and_data(tmp_path, account):
    first = EmbeddedChain(tmp_path / "chain", account)
    results = [first.anchor(digest(n)) for n in range(3)]
    blocks = [call(first, "eth_getBlockByNumber", hex(r["block_number"]), False)["result"] for r in results]
    del first

    second = EmbeddedChain(tmp_path / "chain", account)
    for n, (result, block) in enumerate(zip(results, blocks, strict=True)):
        tx = call(second, "eth_getTransactionByHash", result["tx_hash"])["result"]
        assert int(tx["blockNumber"], 16) == result["block_number"]
        assert tx["input"] == "0x" + digest(n).hex() and tx["from"] == account.address
        assert call(second, "eth_getBlockByNumber", hex(result["block_number"]), False)["result"] == block
    after = second.anchor(digest(3))
    assert after["block_number"] == results[-1]["block_number"] + 1
    assert after["tx_hash"] not in {r["tx_hash"] for r in results}


def test_torn_last_journal_line_is_dropped(tmp_path, account):
    chain = EmbeddedChain(tmp_path / "chain", account)
    kept = chain.anchor(digest(0))
    journal = tmp_path / "chain" / JOURNAL_NAME
    with open(journal, "ab") as handle:
        handle.write(b'{"raw": "0x02f8')  # died mid-append
    again = EmbeddedChain(tmp_path / "chain", account)
    assert call(again, "eth_getTransactionByHash", kept["tx_hash"])["result"] is not None
    assert journal.read_bytes().endswith(b"}\n")
    assert again.anchor(digest(1))["block_number"] == kept["block_number"] + 1


def test_journal_that_does_not_replay_stops_the_start(tmp_path, account):
    chain = EmbeddedChain(tmp_path / "chain", account)
    chain.anchor(digest(0))
    journal = tmp_path / "chain" / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    for damaged in (lines + [lines[-1]], lines[:1] + lines[2:]):  # a nonce used twice; funding lost
        journal.write_bytes(b"".join(damaged))
        with pytest.raises(AnchorFault, match="does not replay"):
            EmbeddedChain(tmp_path / "chain", account)


def test_corrupt_journal_stops_the_start(tmp_path, account):
    EmbeddedChain(tmp_path / "chain", account).anchor(digest(0))
    journal = tmp_path / "chain" / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(AnchorFault, match="line 2 is corrupt"):
        EmbeddedChain(tmp_path / "chain", account)
    journal.write_bytes(b'{"format": "other"}\n')
    with pytest.raises(AnchorFault, match="header"):
        EmbeddedChain(tmp_path / "chain", account)


def test_anchor_from_a_worker_thread_while_rpc_reads(chain):
    results, errors = [], []

    def worker():
        results.extend(chain.anchor(digest(n)) for n in range(10))

    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        answer = call(chain, "eth_blockNumber")
        if "result" not in answer:
            errors.append(answer)
    thread.join()
    assert not errors
    assert [r["block_number"] for r in results] == list(range(2, 12))


# -- JSON-RPC face -------------------------------------------------------------------------

def test_public_endpoint_is_read_only(chain):
    for method in WRITE_METHODS + ["eth_sendTransaction", "eth_sign", "evm_mine", "debug_traceTransaction"]:
        assert call(chain, method)["error"]["code"] == -32601, method


def test_rpc_rejects_malformed_requests_without_internals(chain):
    assert call(chain, "eth_getTransactionByHash", "0x12")["error"]["code"] == -32602
    assert call(chain, "eth_getBlockByNumber", "yesterday", False)["error"]["code"] == -32602
    assert call(chain, "eth_getBalance", "0xnot-an-address")["error"]["code"] == -32602
    assert call(chain, "eth_getTransactionByHash", "0x" + "00" * 32)["result"] is None
    assert call(chain, "eth_getBlockByNumber", "0x999", False)["result"] is None
    assert chain.rpc({"id": 1, "method": "eth_chainId"})["error"]["code"] == -32600
    assert chain.rpc("eth_chainId")["error"]["code"] == -32600
    assert chain.rpc([])["error"]["code"] == -32600
    batch = chain.rpc([{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"} for i in range(3)])
    assert [a["id"] for a in batch] == [0, 1, 2]
    assert json.loads(rpc_http_body(chain, b"{nope"))["error"]["code"] == -32700
    assert json.loads(rpc_http_body(chain, b" " * (MAX_BODY_BYTES + 1)))["error"]["code"] == -32600


def test_stock_web3_reads_the_served_chain(chain, account):
    result = chain.anchor(digest(5))
    with serve_chain(chain) as server:
        w3 = Web3(HTTPProvider(server.url, request_kwargs={"timeout": 5}))
        assert w3.eth.chain_id == chain.chain_id and w3.net.version == str(chain.chain_id)
        assert w3.eth.block_number == result["block_number"] and w3.eth.get_balance(account.address) > 0
        assert w3.client_version.startswith("rapha-devchain")
        tx = w3.eth.get_transaction(result["tx_hash"])
        assert bytes(tx["input"]) == digest(5) and tx["from"] == account.address
        assert w3.eth.get_transaction_receipt(result["tx_hash"])["status"] == 1
        block = w3.eth.get_block(result["block_number"], full_transactions=True)
        assert block["transactions"][0]["hash"].to_0x_hex() == result["tx_hash"]
        with pytest.raises(Exception, match="not available"):
            w3.eth.send_raw_transaction(b"\x02" * 10)


# -- RpcAnchor over HTTP -------------------------------------------------------------------

def test_rpc_anchor_against_the_served_chain_is_journaled(tmp_path, account):
    chain = EmbeddedChain(tmp_path / "chain", account, allow_writes=True)
    with serve_chain(chain) as server:
        anchor = RpcAnchor(server.url, account, timeout=5)
        assert isinstance(anchor, Anchor) and anchor.chain_id == chain.chain_id
        results = [anchor.anchor(digest(n)) for n in range(2)]
        results.append(chain.anchor(digest(2)))  # both paths share one nonce sequence
        results.append(anchor.anchor(digest(3)))
    assert [r["block_number"] for r in results] == [2, 3, 4, 5]
    restarted = EmbeddedChain(tmp_path / "chain", account)
    for n, result in enumerate(results):
        tx = call(restarted, "eth_getTransactionByHash", result["tx_hash"])["result"]
        assert tx["input"] == "0x" + digest(n).hex() and int(tx["blockNumber"], 16) == result["block_number"]


def test_rejected_raw_transaction_is_not_journaled(tmp_path, account):
    chain = EmbeddedChain(tmp_path / "chain", account, allow_writes=True)
    journal = (tmp_path / "chain" / JOURNAL_NAME).read_bytes()
    unfunded = Account.create()
    tx = {"to": unfunded.address, "value": 1, "gas": 21000, "gasPrice": 10**10, "nonce": 0, "chainId": chain.chain_id}
    raw = unfunded.sign_transaction(tx).raw_transaction
    assert call(chain, "eth_sendRawTransaction", raw.to_0x_hex())["error"] == {"code": -32000,
                                                                                "message": "transaction rejected"}
    assert (tmp_path / "chain" / JOURNAL_NAME).read_bytes() == journal


def test_rpc_anchor_refuses_a_chain_it_was_not_configured_for(chain, account):
    with serve_chain(chain) as server:
        anchor = RpcAnchor(server.url, account, chain_id=137, timeout=5)
        with pytest.raises(AnchorFault, match="serves chain"):
            anchor.anchor(digest(0))


def test_rpc_anchor_on_a_read_only_endpoint_fails_closed(chain, account):
    with serve_chain(chain) as server:
        with pytest.raises(AnchorFault) as caught:
            RpcAnchor(server.url, account, timeout=5).anchor(digest(0))
    assert caught.value.message == "anchoring failed: could not prepare the anchor transaction"


def test_rpc_anchor_unreachable_and_silent_endpoints(account):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(AnchorFault, match="reach the chain"):
        RpcAnchor(f"http://127.0.0.1:{closed_port}/chain", account, timeout=1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.monotonic()
        anchor = RpcAnchor(f"http://127.0.0.1:{silent.getsockname()[1]}/", account, chain_id=1, timeout=0.3)
        with pytest.raises(AnchorFault, match="reach the chain"):
            anchor.anchor(digest(0))
        assert time.monotonic() - started < 3
    with pytest.raises(AnchorFault, match="http"):
        RpcAnchor("ws://127.0.0.1:1/", account)


def test_replay_of_100_transactions(tmp_path, account):
    chain = EmbeddedChain(tmp_path / "chain", account)
    started = time.perf_counter()
    for n in range(99):
        chain.anchor(digest(n))
    per_anchor = (time.perf_counter() - started) / 99
    del chain
    started = time.perf_counter()
    replayed = EmbeddedChain(tmp_path / "chain", account)
    replay_seconds = time.perf_counter() - started
    assert call(replayed, "eth_blockNumber")["result"] == hex(100)
    print(f"anchor: {per_anchor * 1000:.1f} ms each; replay of 100 transactions: {replay_seconds:.2f} s")
    assert replay_seconds < 30
