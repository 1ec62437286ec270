"""The messages the job's ``rapha`` runtime raises itself, which may leave the edge.

An exception's message can carry record values (``KeyError: 'DOE^JANE'``), so by default
only its type and cell line leave (S5). The runtime's own refusals are fixed texts that
hold no data, and they are what a researcher needs to fix a call ("rapha.log takes
numbers"). The check is by exact text against this set, outside the sandbox: the cell can
raise any exception class with any message, or write error.json itself, so where a
message came from is never trusted, only whether it is one of these. The cell can choose
one of them, which tells no more than its choice of a built-in exception type already can.

Only the pure contract is imported: the runner and the release checks read this outside
the sandbox without loading the job's runtime (torch).
"""

from __future__ import annotations

from jupyter_rapha.protocol.contract import METRIC_NAME_RULE, OUTPUT_LIMITS
from jupyter_rapha.protocol.private import MAX_BATCH_SIZE, MAX_EPOCHS, OPTIMISERS

MAX_METRIC_POINTS = OUTPUT_LIMITS.metric_points
# The broker's limits, as its refusals state them (edge_kernel.data.broker).
BROKER_MAX_BATCH_SIZE = 4096
BROKER_MAX_LOADERS = 16

# DP mode (rapha.fit_private), raised by the runtime or the broker.
LOADER_IN_DP_MODE = ("rapha.loader is not available in a differentially private job: the edge's trainer "
                     "reads the records; hand the model and the loss to rapha.fit_private")
OUTPUTS_IN_DP_MODE = ("rapha.save and rapha.log are not available in a differentially private job: "
                      "only the edge's trainer releases weights and metrics")
FIT_PRIVATE_NOT_DP = "rapha.fit_private must be called as rapha.fit_private(...) in the cell itself"
FIT_PRIVATE_TWICE = "rapha.fit_private may be called once per job"
NOT_A_MODULE = "rapha.fit_private takes a torch.nn.Module and a loss function loss_fn(output, batch)"
LOSS_NOT_SCALAR = "loss_fn(output, batch) must return a scalar floating-point tensor (reduce it, e.g. .mean())"
MODEL_NOT_EXPORTABLE = ("the model and loss could not be exported with torch.export on inputs shaped as "
                        "rapha.schema: run the cell with --local to see why")
PRIVATE_REQUEST_MESSAGES = (
    f"epochs must be a whole number from 1 to {MAX_EPOCHS}",
    f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}",
    "lr must be a positive number", "max_grad_norm must be a positive number",
    f"optimiser must be one of {', '.join(OPTIMISERS)}",
)

RUNTIME_MESSAGES = frozenset({
    "prefetch is a number of batches, 0 to 8",
    "the broker named shared memory outside the batch's region",
    METRIC_NAME_RULE,
    f"at most {MAX_METRIC_POINTS} metric points per job",
    "rapha.save takes a torch module or a non-empty dict of tensors",
    "rapha.save stores only tensors under string names",
    "rapha.log takes single numbers",
    "rapha.log takes numbers",
    "rapha.log takes finite numbers",
    "the data broker closed the channel",
    "refused",
    "rapha.artifact: the job brought no artifact of that name (--artifact NAME=PATH)",
    # The broker's refusals, passed on by the runtime as BrokerRefused.
    "budget exhausted",
    "unknown loader",
    "unknown request",
    f"loader needs batch_size 1-{BROKER_MAX_BATCH_SIZE}, shuffle, seed >= 0",
    f"at most {BROKER_MAX_LOADERS} loaders per job",
    "a lot names distinct cohort positions",  # to the edge's trainer only; listed as every broker refusal is
    LOADER_IN_DP_MODE, OUTPUTS_IN_DP_MODE, FIT_PRIVATE_NOT_DP, FIT_PRIVATE_TWICE, NOT_A_MODULE, LOSS_NOT_SCALAR,
    MODEL_NOT_EXPORTABLE, *PRIVATE_REQUEST_MESSAGES,
})


def public_message(message: object) -> str | None:
    """``message`` if it is one of the runtime's own texts, else None (it stays at the edge)."""
    return message if isinstance(message, str) and message in RUNTIME_MESSAGES else None
