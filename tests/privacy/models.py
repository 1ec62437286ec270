"""The models and data the trainer's tests share: the quickstart's TinyCNN (taken from the
quickstart's own training cell), wrapped with its loss as the loss module the job exports,
and synthetic blob-left-or-right images like the demo dataset's."""

from __future__ import annotations

import torch
from torch import nn

from examples.make_quickstart import TRAIN_CELL


def quickstart_model_class() -> type[nn.Module]:
    namespace: dict[str, object] = {}
    exec(compile(TRAIN_CELL.split("torch.manual_seed")[0], "<quickstart>", "exec"), namespace)  # noqa: S102
    model_class = namespace["TinyCNN"]
    assert isinstance(model_class, type)
    return model_class


class LossModule(nn.Module):
    """model + loss_fn as one module: the lot's fields in, the lot's mean loss out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, finding: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(image), finding)


def quickstart_loss_module(seed: int = 0) -> LossModule:
    torch.manual_seed(seed)
    return LossModule(quickstart_model_class()())


def export(module: nn.Module, *example: torch.Tensor) -> torch.export.ExportedProgram:
    """As the job exports it: dim 0 of every field one dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(module, tuple(t[:4] for t in example), dynamic_shapes=tuple({0: batch} for _ in example))


def blobs(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """1x32x32 images with a blob on the left (label 0) or the right (label 1), noised."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.where(labels[:, None] == 0, 9.0, 23.0) + 2 * torch.randn(count, 2, generator=generator)
    images = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 18.0)
    images = images + 0.1 * torch.randn(images.shape, generator=generator)
    return images[:, None].float(), labels
