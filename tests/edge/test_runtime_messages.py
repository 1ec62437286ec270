"""The runtime's own refusal texts are the only messages that may leave with a job's
error: every text the runtime and the broker raise or reply with is in the list, and the
list holds nothing else that could be mistaken for one."""

from __future__ import annotations

import ast
from pathlib import Path

from edge_kernel.data import broker
from jupyter_rapha.protocol.contract import METRIC_NAME_RULE
from edge_kernel.inside import runtime
from edge_kernel.wire import messages
from edge_kernel.wire.messages import RUNTIME_MESSAGES, public_message


def _texts(node: ast.AST) -> list[str]:
    """String constants (f-strings evaluated against the module's limits) under ``node``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        limits = {**vars(messages), **vars(broker)}
        return [eval(compile(ast.Expression(node), "<f>", "eval"), limits)]  # noqa: S307 - our own source
    if isinstance(node, ast.Name) and isinstance(vars(runtime).get(node.id), str):
        return [vars(runtime)[node.id]]  # a text imported from the contract (METRIC_NAME_RULE)
    return []


def test_every_runtime_refusal_is_listed():
    tree = ast.parse(Path(runtime.__file__).read_text())
    raised = [text for node in ast.walk(tree) if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
              for arg in node.exc.args for text in _texts(arg)]
    assert raised and set(raised) <= RUNTIME_MESSAGES, set(raised) - RUNTIME_MESSAGES
    assert METRIC_NAME_RULE in raised


def test_every_broker_refusal_is_listed():
    tree = ast.parse(Path(broker.__file__).read_text())
    replies = [text for node in ast.walk(tree) if isinstance(node, ast.Dict)
               for key, value in zip(node.keys, node.values, strict=True)
               if isinstance(key, ast.Constant) and key.value == "error" for text in _texts(value)]
    assert replies and set(replies) <= RUNTIME_MESSAGES, set(replies) - RUNTIME_MESSAGES
    assert (messages.BROKER_MAX_BATCH_SIZE, messages.BROKER_MAX_LOADERS) == (broker.MAX_BATCH_SIZE, broker.MAX_LOADERS)


def test_only_exact_texts_pass():
    assert public_message("rapha.log takes numbers") == "rapha.log takes numbers"
    for other in ("rapha.log takes numbers ", "KeyError: 'DOE^JANE'", None, 3, ["budget exhausted"]):
        assert public_message(other) is None
