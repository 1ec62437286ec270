"""The edge's own DP-SGD trainer (trusted edge code, run in a process of its own).

In DP mode the researcher's code never sees a record: the job exports a loss module (the
model and its loss) and this package trains it: Poisson sampling, per-sample gradients,
clipping, Gaussian noise, the optimiser and the accountant. These modules import torch
and Opacus, so only the trainer process loads them; the edge service never does (regopy
before torch aborts a process), except ``errors``, which imports neither.
"""
