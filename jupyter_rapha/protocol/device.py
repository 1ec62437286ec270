"""``rapha.device``: the one rule, shared by the edge's runtime and the local dry run.

"cuda" when the job was granted GPUs and torch sees one, else "cpu". A cell written as
``model.to(rapha.device)`` then runs unchanged on a GPU edge, a CPU edge and a laptop.
"""

from __future__ import annotations


def job_device(gpus_granted: int, cuda_available: bool) -> str:
    return "cuda" if gpus_granted > 0 and cuda_available else "cpu"
