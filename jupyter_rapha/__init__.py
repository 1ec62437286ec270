"""jupyter-rapha: train clinical models where the data lives."""

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    # Imported lazily so that `import jupyter_rapha` stays cheap and torch-free.
    from .magic import load_ipython_extension as _load

    _load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    # The server extension is enabled as "jupyter_rapha"; its app lives in .extension.
    from .extension import _jupyter_server_extension_points as points

    return points()
