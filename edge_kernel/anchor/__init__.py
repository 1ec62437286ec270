"""Anchoring receipt digests on a chain (embedded dev chain, JSON-RPC, RFC 3161).

py_ecc, which eth_account and web3 import, raises the process's recursion limit to
100000 on import. C code bounded by that limit (json, re) would then overflow the C
stack on hostile input and kill the edge instead of raising RecursionError, so it is
imported here, before any module of this package, and the limit put back.
"""

from jupyter_rapha.protocol.bounded import recursion_limit_kept

with recursion_limit_kept():
    import py_ecc  # noqa: F401
