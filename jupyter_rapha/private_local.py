"""``rapha.fit_private`` in the ``--local`` dry run: the same call, on synthetic records.

It does here what the edge will do, so that a model that cannot be trained privately is
found before anything is sent, with the layer to change: Opacus's ``ModuleValidator.fix``
(BatchNorm becomes GroupNorm, in the model itself), ``ModuleValidator.validate`` on what is left, the model and
loss exported with ``torch.export`` on one synthetic batch, the loss checked to be a
scalar; then a few epochs of DP-SGD with Opacus's ``PrivacyEngine`` (Poisson sampling,
per-sample clipping, noise for ``epsilon`` and ``delta``) on the synthetic cohort. The
edge trains with its own trainer and the hospital's budget: these weights and this
epsilon only show that the call works.
"""

from __future__ import annotations

from typing import Any

from .protocol.errors import BadInput
from .protocol.private import EPSILON_METRIC, PrivateRequestError, parse_private_request

LOCAL_EPSILON = 8.0  # the hospital's budget is the edge's to apply; this one only exercises the call
LOCAL_DELTA = 1e-5


def fit_private_locally(data: dict[str, Any], schema: dict[str, dict[str, Any]], model: Any, loss_fn: Any,
                        settings: dict[str, Any]) -> tuple[bytes, dict[str, list[float]]]:
    """The trained weights (safetensors) and ``{"epsilon": [after each epoch]}``."""
    import torch
    from opacus.validators import ModuleValidator

    try:
        request = parse_private_request(settings)
    except PrivateRequestError as bad:
        raise BadInput(f"rapha.fit_private: {bad}") from None
    if not isinstance(model, torch.nn.Module) or not callable(loss_fn):
        raise BadInput("rapha.fit_private takes a torch.nn.Module and a loss function loss_fn(output, batch)")
    fixed = fix_in_place(model)
    problems = ModuleValidator.validate(fixed, strict=False)
    if problems:
        raise BadInput("the model cannot be trained privately: " + "; ".join(str(p) for p in problems),
                       hint="replace the layer named (opacus.validators.ModuleValidator.fix shows what it can fix)")
    fields = [name for name in schema]
    features = [name for name in fields if schema[name].get("kind") == "feature"]
    _check_export(torch, fixed, loss_fn, data, fields, features)
    return _train(torch, fixed, loss_fn, data, fields, features, request)


def fix_in_place(model: Any) -> Any:
    """``ModuleValidator.fix``'s replacements, made in place: its own copy of the model
    pickles it, which a class defined in a notebook cell does not survive."""
    from opacus.utils.module_utils import get_submodule, trainable_modules
    from opacus.validators import ModuleValidator

    for name in [name for name, _ in trainable_modules(model)]:
        sub_module = get_submodule(model, name)
        fixer = ModuleValidator.FIXERS.get(type(sub_module))
        if fixer is not None:
            replacement = fixer(sub_module).to(next(sub_module.parameters()).device)
            model = ModuleValidator._replace_sub_module(root=model, sub_module_name=name, new_sub_module=replacement)
    return model


def _loss(model: Any, loss_fn: Any, fields: list[str], features: list[str], tensors: tuple[Any, ...]) -> Any:
    batch = dict(zip(fields, tensors, strict=True))
    return loss_fn(model(*(batch[name] for name in features)), batch)


def _check_export(torch: Any, model: Any, loss_fn: Any, data: dict[str, Any], fields: list[str],
                  features: list[str]) -> None:
    class LossProgram(torch.nn.Module):  # type: ignore[misc]  # torch is imported lazily
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return _loss(self.model, loss_fn, fields, features, tensors)

    inputs = tuple(data[name][:2] for name in fields)
    loss = LossProgram()(*inputs)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.dtype.is_floating_point:
        raise BadInput("loss_fn(output, batch) must return a scalar floating-point tensor (reduce it, e.g. .mean())")
    batch = torch.export.Dim("batch", min=1)
    try:
        torch.export.export(LossProgram(), inputs, dynamic_shapes=(tuple({0: batch} for _ in inputs),))
    except Exception as exc:  # the researcher's own model on synthetic data: the message is theirs to read
        raise BadInput(f"the model and loss do not export with torch.export: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}",
                       hint="the edge trains the exported program; make the forward pass traceable") from None


def _train(torch: Any, model: Any, loss_fn: Any, data: dict[str, Any], fields: list[str], features: list[str],
           request: dict[str, Any]) -> tuple[bytes, dict[str, list[float]]]:
    from opacus import PrivacyEngine
    from safetensors.torch import save

    dataset = torch.utils.data.TensorDataset(*(data[name] for name in fields))
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(request["batch_size"], len(dataset)))
    optimiser_class = torch.optim.Adam if request["optimiser"] == "adam" else torch.optim.SGD
    optimiser = optimiser_class(model.parameters(), lr=request["lr"])
    engine = PrivacyEngine()
    private_model, private_optimiser, private_loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimiser, data_loader=loader, epochs=request["epochs"],
        target_epsilon=LOCAL_EPSILON, target_delta=LOCAL_DELTA, max_grad_norm=request["max_grad_norm"],
        poisson_sampling=True)
    epsilons = []
    for _ in range(request["epochs"]):
        for tensors in private_loader:
            if len(tensors[0]) == 0:
                continue
            private_optimiser.zero_grad()
            _loss(private_model, loss_fn, fields, features, tuple(tensors)).backward()
            private_optimiser.step()
        epsilons.append(float(engine.get_epsilon(LOCAL_DELTA)))
    state = {name: value.detach().cpu().contiguous().clone() for name, value in model.state_dict().items()}
    return save(state), {EPSILON_METRIC: epsilons}
