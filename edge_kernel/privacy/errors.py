"""The trainer's one error type. Imports neither torch nor Opacus, so that the edge
process can name it."""

from __future__ import annotations

from jupyter_rapha.protocol.errors import BadInput


class PrivacyError(BadInput):
    """A DP configuration, budget or program the trainer cannot train privately; the
    message says what to change."""
