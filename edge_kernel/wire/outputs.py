"""Names of the files a job leaves in ``out/``, shared by the job runtime and the runner."""

from __future__ import annotations

# The exported program (``torch.export.save``) that the membership check evaluates; never
# released itself: it leaves only as the weights beside it.
PROGRAM_FILE = "model.pt2"

# DP mode (rapha.fit_private): the loss program the edge's trainer trains, and the
# hyperparameters the cell asked for; read by the runner as hostile, never released.
PRIVATE_PROGRAM_FILE = "private.pt2"
PRIVATE_REQUEST_FILE = "private.json"
