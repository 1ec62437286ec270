"""The jupyter_rapha Jupyter server extension (see app.py). Imported lazily, so that the
in-process path (``jupyter_rapha.routing.proxy.EdgeProxy``) does not need a Jupyter server installed."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import RaphaExtension

    return [{"module": "jupyter_rapha.extension", "app": RaphaExtension}]
