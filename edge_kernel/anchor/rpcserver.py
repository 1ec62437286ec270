"""Ethereum JSON-RPC 2.0 for the embedded chain: request checks, hex encodings and a
tiny HTTP server.

The edge exposes this at ``POST /chain`` so that verifiers can read anchors with stock
tooling; anything a chain object needs to serve is its ``rpc(request)`` method, and
``rpc_http_body`` turns raw HTTP bytes into the answer bytes for any web framework.
The endpoint is public, so requests are bounded (body size, batch length) and failures
answer JSON-RPC errors without internals.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from eth_bloom.bloom import BloomFilter
from eth_utils.address import is_address
from eth_utils.hexadecimal import is_hexstr

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.bounded import recursion_limit_kept
from jupyter_rapha.protocol.errors import BadInput

from .base import DEFAULT_TIP_WEI

with recursion_limit_kept():  # eth_tester imports py-evm, which raises it (see anchor/__init__)
    from eth_tester.exceptions import BlockNotFound, TransactionNotFound

CLIENT_VERSION = "rapha-devchain/1 (eth-tester, py-evm)"
MAX_BODY_BYTES = 256 * 1024
MAX_BATCH = 64
MAX_DEPTH = 16  # a batch of requests whose params hold call objects: a few levels suffice
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603)
TX_REJECTED = -32000
# snake_case keys of eth-tester results whose JSON-RPC name is not their camelCase form
_RENAMED = {"coinbase": "miner"}
_DROPPED = {"state_root"}  # a receipt's pre-Byzantium root; "status" carries the outcome
LOGS_BLOOM_BYTES = 256

Method = Callable[[list[Any]], Any]


class RpcError(Exception):
    """A JSON-RPC error answer; ``message`` is shown to the caller."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RpcChain(Protocol):
    def rpc(self, request: Any) -> Any: ...


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def dispatch(methods: Mapping[str, Method], request: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Answer one request or a batch (a list) with the given method table."""
    if isinstance(request, list):
        if not request or len(request) > MAX_BATCH:
            return _error(None, INVALID_REQUEST, f"a batch holds 1 to {MAX_BATCH} requests")
        return [_dispatch_one(methods, item) for item in request]
    return _dispatch_one(methods, request)


def _dispatch_one(methods: Mapping[str, Method], request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return _error(None, INVALID_REQUEST, "a request is a JSON object")
    request_id = request.get("id")
    if isinstance(request_id, (dict, list)):
        return _error(None, INVALID_REQUEST, "id must be a string, number or null")
    method, params = request.get("method"), request.get("params", [])
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str) or not isinstance(params, list):
        return _error(request_id, INVALID_REQUEST, "not a JSON-RPC 2.0 request with a params list")
    handler = methods.get(method)
    if handler is None:
        return _error(request_id, METHOD_NOT_FOUND, f"method {method[:64]!r} is not available")
    try:
        result = handler(params)
    except RpcError as exc:
        return _error(request_id, exc.code, exc.message)
    except Exception:
        # A public endpoint: never echo exception text (paths, state) to the caller.
        return _error(request_id, INTERNAL_ERROR, "internal error")
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def rpc_http_body(chain: RpcChain, body: bytes) -> bytes:
    """Raw POST body in, raw JSON answer out."""
    return rpc_http_answer(chain, body)[1]


def rpc_http_answer(chain: RpcChain, body: bytes) -> tuple[int, bytes]:
    """Raw POST body in, (HTTP status, raw JSON answer) out: 413 for an oversized body,
    400 when the body is not one JSON-RPC request or batch, else 200 (a method's own
    error is a JSON-RPC error in a 200, as stock clients expect)."""
    if len(body) > MAX_BODY_BYTES:
        status, answer = 413, _error(None, INVALID_REQUEST, f"request body exceeds {MAX_BODY_BYTES} bytes")
    else:
        try:
            # bounded: this endpoint is public, and json.loads alone recurses once per level
            request = bounded.loads(body, what="request body", max_depth=MAX_DEPTH)
        except BadInput as exc:
            status, answer = 400, _error(None, PARSE_ERROR, exc.message)
        else:
            answer = chain.rpc(request)
            status = 400 if isinstance(answer, dict) and _whole_request_refused(answer) else 200
    return status, json.dumps(answer, separators=(",", ":")).encode()


def _whole_request_refused(answer: dict[str, Any]) -> bool:
    error = answer.get("error")
    return isinstance(error, dict) and error.get("code") in (PARSE_ERROR, INVALID_REQUEST)


# -- encodings ---------------------------------------------------------------------------

def quantity(value: int) -> str:
    return hex(int(value))


def encode(value: Any, key: str = "") -> Any:
    """eth-tester's normalized output (ints, 0x strings, snake_case) to JSON-RPC
    (hex QUANTITY, 0x DATA, camelCase)."""
    if isinstance(value, bool) or value is None:
        return value
    if key == "logs_bloom" and isinstance(value, int):
        return "0x" + value.to_bytes(LOGS_BLOOM_BYTES, "big").hex()
    if isinstance(value, int):
        return quantity(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, Mapping):
        return {_camel(k): encode(v, k) for k, v in value.items() if k not in _DROPPED}
    return value


def _camel(key: str) -> str:
    if key in _RENAMED:
        return _RENAMED[key]
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# -- the methods ---------------------------------------------------------------------------

class ChainState(Protocol):
    """What the method table needs from the embedded chain."""

    chain_id: int

    @property
    def tester(self) -> Any: ...

    def base_fee(self) -> int: ...

    def submit_raw(self, raw: bytes) -> tuple[str, int]: ...


def rpc_methods(chain: ChainState, *, allow_writes: bool = False) -> dict[str, Method]:
    """Read-only methods a verifier needs; with ``allow_writes`` also those a wallet
    needs to send a transaction (every write goes through ``chain.submit_raw``)."""
    tester = chain.tester
    methods: dict[str, Method] = {
        "web3_clientVersion": lambda p: CLIENT_VERSION,
        "eth_chainId": lambda p: quantity(chain.chain_id),
        "net_version": lambda p: str(chain.chain_id),
        "eth_blockNumber": lambda p: quantity(tester.get_block_by_number("latest")["number"]),
        "eth_getBalance": lambda p: quantity(tester.get_balance(_address(p, 0), _block_id(p, 1))),
        "eth_getTransactionByHash": lambda p: _found(lambda: _tx_json(tester.get_transaction_by_hash(_hash32(p, 0)))),
        "eth_getTransactionReceipt":
            lambda p: _found(lambda: _receipt_json(tester.get_transaction_receipt(_hash32(p, 0)))),
        "eth_getBlockByNumber": lambda p: _found(lambda: _block_json(
            tester.get_block_by_number(_block_id(p, 0), _flag(p, 1)))),
    }
    if allow_writes:
        methods.update({
            "eth_sendRawTransaction": lambda p: _send_raw(chain, p),
            "eth_getTransactionCount": lambda p: quantity(tester.get_nonce(_address(p, 0), _block_id(p, 1))),
            "eth_gasPrice": lambda p: quantity(chain.base_fee() + DEFAULT_TIP_WEI),
            "eth_maxPriorityFeePerGas": lambda p: quantity(DEFAULT_TIP_WEI),
            "eth_estimateGas": lambda p: quantity(tester.estimate_gas(_call(p, 0), _block_id(p, 1))),
            "eth_feeHistory": lambda p: encode(tester.get_fee_history(
                _int(p, 0), _block_id(p, 1), tuple(_list(p, 2)))),
        })
    return methods


def escrow_write_methods(chain: ChainState, escrow: str, selectors: frozenset[bytes]) -> dict[str, Method]:
    """What a researcher's wallet needs to lock, cancel and withdraw on the edge's escrow
    contract, and nothing more: calls to the contract only, and raw transactions only when
    they are EIP-1559 transactions sent to the contract naming one of ``selectors``. Any
    other transaction is refused before it reaches the journal, so the public endpoint
    adds no block that is not an escrow operation."""
    tester = chain.tester
    contract = escrow.lower()
    caller = str(getattr(chain, "address", escrow))  # eth-tester wants a funded sender for a call without one

    def call(params: list[Any]) -> str:
        request = {"from": caller, **_call(params, 0)}
        if str(request.get("to", "")).lower() != contract:
            raise RpcError(INVALID_PARAMS, "eth_call is served for the escrow contract only")
        try:
            result = tester.call(request, _block_id(params, 1))
        except Exception:
            raise RpcError(TX_REJECTED, "execution reverted") from None
        return "0x" + (result.hex() if isinstance(result, bytes) else str(result).removeprefix("0x"))

    def estimate(params: list[Any]) -> str:
        request = {"from": caller, **_call(params, 0)}
        if str(request.get("to", "")).lower() != contract:
            raise RpcError(INVALID_PARAMS, "eth_estimateGas is served for the escrow contract only")
        try:
            return quantity(tester.estimate_gas(request, _block_id(params, 1)))
        except Exception:
            raise RpcError(TX_REJECTED, "execution reverted") from None

    def send(params: list[Any]) -> str:
        raw = _param(params, 0)
        if not is_hexstr(raw) or len(raw) < 4:
            raise RpcError(INVALID_PARAMS, "expected signed transaction bytes as 0x hex")
        body = bytes.fromhex(raw[2:])
        if not _escrow_transaction(body, contract, selectors):
            raise RpcError(TX_REJECTED, "this endpoint takes only escrow lock, cancel and withdraw transactions")
        return _send_raw(chain, params)

    return {
        "eth_call": call, "eth_estimateGas": estimate, "eth_sendRawTransaction": send,
        "eth_getTransactionCount": lambda p: quantity(tester.get_nonce(_address(p, 0), _block_id(p, 1))),
        "eth_gasPrice": lambda p: quantity(chain.base_fee() + DEFAULT_TIP_WEI),
        "eth_maxPriorityFeePerGas": lambda p: quantity(DEFAULT_TIP_WEI),
    }


def _escrow_transaction(raw: bytes, contract: str, selectors: frozenset[bytes]) -> bool:
    from eth_account.typed_transactions.typed_transaction import TypedTransaction
    from hexbytes import HexBytes

    if raw[:1] != b"\x02":
        return False
    try:
        tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    except Exception:
        return False
    to, data = tx.get("to") or b"", bytes(tx.get("data") or b"")
    to_text = "0x" + bytes(to).hex() if isinstance(to, (bytes, bytearray)) else str(to)
    return to_text.lower() == contract and data[:4] in selectors


def _found(fetch: Callable[[], Any]) -> Any:
    # JSON-RPC answers null for an unknown transaction or block, not an error.
    try:
        return fetch()
    except (TransactionNotFound, BlockNotFound):
        return None


def _send_raw(chain: ChainState, params: list[Any]) -> str:
    raw = _param(params, 0)
    if not is_hexstr(raw) or len(raw) < 4:
        raise RpcError(INVALID_PARAMS, "expected signed transaction bytes as 0x hex")
    try:
        return chain.submit_raw(bytes.fromhex(raw[2:]))[0]
    except Exception:
        raise RpcError(TX_REJECTED, "transaction rejected") from None


def _tx_json(tx: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = encode(tx)
    out["input"] = out.pop("data", "0x")
    return out


def _receipt_json(receipt: Mapping[str, Any]) -> dict[str, Any]:
    bloom = BloomFilter()
    for log in receipt.get("logs", ()):
        bloom.add(bytes.fromhex(log["address"][2:]))
        for topic in log.get("topics", ()):
            bloom.add(bytes.fromhex(topic[2:]) if isinstance(topic, str) else bytes(topic))
    out: dict[str, Any] = encode(receipt)
    out["logsBloom"] = encode(int(bloom), "logs_bloom")
    return out


def _block_json(block: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = encode(block)
    out["transactions"] = [item if isinstance(item, str) else _tx_json(tx)
                           for item, tx in zip(out["transactions"], block["transactions"], strict=True)]
    return out


_MISSING = object()


def _param(params: list[Any], index: int, default: Any = _MISSING) -> Any:
    if index < len(params):
        return params[index]
    if default is _MISSING:
        raise RpcError(INVALID_PARAMS, f"missing parameter {index + 1}")
    return default


def _hash32(params: list[Any], index: int) -> str:
    value = _param(params, index)
    if not (isinstance(value, str) and is_hexstr(value) and len(value) == 66 and value.startswith("0x")):
        raise RpcError(INVALID_PARAMS, "expected a 32-byte 0x hash")
    return value.lower()


def _address(params: list[Any], index: int) -> str:
    value = _param(params, index)
    if not (isinstance(value, str) and is_address(value)):
        raise RpcError(INVALID_PARAMS, "expected a 20-byte 0x address")
    return value


def _block_id(params: list[Any], index: int) -> str | int:
    value = _param(params, index, "latest")
    if value in ("latest", "pending", "earliest"):
        return str(value)
    if value in ("safe", "finalized"):
        return "latest"  # one node, instant finality
    if isinstance(value, str) and value.startswith("0x") and is_hexstr(value) and len(value) > 2:
        return int(value, 16)
    raise RpcError(INVALID_PARAMS, "expected a block number (0x quantity) or tag")


def _int(params: list[Any], index: int) -> int:
    value = _param(params, index)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.startswith("0x") and is_hexstr(value) and len(value) > 2:
        return int(value, 16)
    raise RpcError(INVALID_PARAMS, f"parameter {index + 1} must be a quantity")


def _flag(params: list[Any], index: int) -> bool:
    value = _param(params, index, False)
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, f"parameter {index + 1} must be true or false")
    return value


def _list(params: list[Any], index: int) -> list[Any]:
    value = _param(params, index, [])
    if not isinstance(value, list):
        raise RpcError(INVALID_PARAMS, f"parameter {index + 1} must be a list")
    return value


def _call(params: list[Any], index: int) -> dict[str, Any]:
    """A JSON-RPC call object in eth-tester's form (ints, ``data``)."""
    call = _param(params, index)
    if not isinstance(call, dict):
        raise RpcError(INVALID_PARAMS, "expected a transaction object")
    out: dict[str, Any] = {}
    for key in ("from", "to"):
        if key in call:
            out[key] = _address([call[key]], 0)
    data = call.get("input", call.get("data"))
    if data is not None:
        if not (isinstance(data, str) and is_hexstr(data)):
            raise RpcError(INVALID_PARAMS, "transaction data must be 0x hex")
        out["data"] = data
    for key in ("value", "gas"):
        if key in call:
            out[key] = _int([call[key]], 0)
    return out


# -- HTTP ---------------------------------------------------------------------------------

class ChainServer:
    """``POST /chain`` on a background thread; for tests and stand-alone demos."""

    def __init__(self, chain: RpcChain, host: str = "127.0.0.1", port: int = 0, path: str = "/chain") -> None:
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(chain, path))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="chain-rpc", daemon=True)
        self.url = f"http://{host}:{self._httpd.server_address[1]}{path}"

    def start(self) -> ChainServer:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ChainServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_chain(chain: RpcChain, host: str = "127.0.0.1", port: int = 0) -> ChainServer:
    return ChainServer(chain, host, port).start()


def _handler_for(chain: RpcChain, path: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            if self.path != path:
                return self._answer(404, b'{"error":"not found"}')
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                return self._answer(413, b'{"error":"request too large"}')
            self._answer(*rpc_http_answer(chain, self.rfile.read(length)))

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # request lines would include client addresses; the edge logs elsewhere

    return Handler
