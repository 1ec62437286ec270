"""Helpers for examples/finetune.ipynb; travels to the edge with the cell (--include)."""

from monai.networks.nets import DenseNet121


def build_densenet():
    """The network the pretrained weights are for: a 2-D DenseNet121 for 1x32x32 images."""
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4)


def freeze_features(model):
    """Keep the pretrained features; train only the classifier head. Returns its parameters."""
    for parameter in model.features.parameters():
        parameter.requires_grad = False
    return list(model.class_layers.parameters())
