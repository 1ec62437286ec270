"""Ordinary training cells, as researchers write them: the scanner must find nothing."""

TRAINING_CELLS = {
    "mlp": '''
import torch
import torch.nn as nn
import torch.nn.functional as F

model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 128), nn.ReLU(), nn.Linear(128, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=rapha.params.get("lr", 1e-3))
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=16, shuffle=True):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch["image"]), batch["finding"])
        loss.backward()
        optimizer.step()
    rapha.log(loss=loss.item())
rapha.save(model)
''',
    "cnn": '''
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


model = SmallCNN()
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
for epoch in range(3):
    for batch in rapha.loader(batch_size=8):
        opt.zero_grad()
        loss = criterion(model(batch["image"]), batch["finding"])
        loss.backward()
        opt.step()
model.eval()
rapha.save(model)
''',
    "resnet_block": '''
import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, num_classes=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = self._make_layer(16, 16, 2)
        self.layer2 = self._make_layer(16, 32, 2, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, inplanes, planes, blocks, stride=1):
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(inplanes, planes, stride, down)]
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


model = TinyResNet()
''',
    "numpy_stats": '''
import numpy as np
import math

values = []
for batch in rapha.loader(batch_size=32):
    arr = batch["image"].numpy()
    values.append(arr.mean())
mean = float(np.mean(values))
std = float(np.std(values)) or 1.0
rapha.log(pixel_mean=mean, pixel_std=std, log_std=math.log(std + 1e-8))
''',
    "scheduler_and_amp": '''
import torch
from torch import nn, optim
from torch.optim.lr_scheduler import CosineAnnealingLR

model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
optimizer = optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
scheduler = CosineAnnealingLR(optimizer, T_max=10)
scaler = torch.amp.GradScaler("cpu", enabled=False)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=16, shuffle=True):
        with torch.autocast("cpu", enabled=False):
            loss = nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    rapha.log(loss=float(loss), lr=scheduler.get_last_lr()[0])
rapha.save(model)
''',
    "dataclass_config": '''
from dataclasses import dataclass, field
from typing import List
import torch


@dataclass
class Config:
    hidden: int = 64
    dropout: float = 0.1
    layers: List[int] = field(default_factory=lambda: [64, 32])


cfg = Config(hidden=int(rapha.params.get("hidden", 64)))
blocks = []
width = 32 * 32
for size in cfg.layers:
    blocks += [torch.nn.Linear(width, size), torch.nn.GELU(), torch.nn.Dropout(cfg.dropout)]
    width = size
model = torch.nn.Sequential(torch.nn.Flatten(), *blocks, torch.nn.Linear(width, 2))
''',
    "early_stopping": '''
import copy
import torch

model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 2))
opt = torch.optim.Adam(model.parameters())
best, best_state, patience = float("inf"), None, 0
for epoch in range(20):
    total = 0.0
    for batch in rapha.loader(batch_size=16):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        loss.backward()
        opt.step()
        total += loss.item()
    if total < best:
        best, best_state, patience = total, copy.deepcopy(model.state_dict()), 0
    else:
        patience += 1
        if patience >= 3:
            break
    rapha.log(epoch_loss=total)
model.load_state_dict(best_state)
rapha.save(model)
''',
    "evaluation_metrics": '''
import torch
from collections import Counter

model = torch.nn.Linear(1024, 2)
model.eval()
correct, seen, labels = 0, 0, Counter()
with torch.no_grad():
    for batch in rapha.loader(batch_size=64, shuffle=False):
        pred = model(batch["image"].flatten(1)).argmax(dim=1)
        correct += int((pred == batch["finding"]).sum())
        seen += len(pred)
        labels.update(batch["finding"].tolist())
rapha.log(accuracy=correct / max(seen, 1), positives=labels[1])
''',
    "local_files_and_paths": '''
import json
import os
import re
from pathlib import Path
import torch

out = Path("checkpoints")
out.mkdir(exist_ok=True)
(out / "config.json").write_text(json.dumps({"lr": 0.01}))
with open(os.path.join("checkpoints", "notes.txt"), "w") as fh:
    fh.write("run 1")
pattern = re.compile(r"layer(\\d+)")
model = torch.nn.Linear(4, 2)
torch.save(model.state_dict(), out / "model.pt")
state = torch.load(out / "model.pt", weights_only=True)
model.load_state_dict(state)
names = [n for n in state if pattern.search(n) or n.endswith("weight")]
print(sorted(names), os.getcwd(), os.path.basename("a/b.txt"))
''',
    "seeds_and_init": '''
import random
import numpy as np
import torch
import torch.nn as nn

random.seed(0)
np.random.seed(0)
torch.manual_seed(0)
torch.backends.cudnn.benchmark = False
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


model = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 2)).to(device)
model.apply(init_weights)
activations = {"relu": nn.ReLU, "gelu": nn.GELU}
act = activations[rapha.params.get("act", "relu")]()
compiled = torch.compile(model) if hasattr(torch, "compile") else model
''',
    "augment_transforms": '''
import torch
import torchvision.transforms.v2 as T

augment = T.Compose([T.RandomHorizontalFlip(), T.RandomRotation(10), T.Normalize([0.5], [0.25])])
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
opt = torch.optim.Adam(model.parameters())
for batch in rapha.loader(batch_size=8):
    images = torch.stack([augment(img) for img in batch["image"]])
    loss = torch.nn.functional.cross_entropy(model(images), batch["finding"])
    opt.zero_grad()
    loss.backward()
    opt.step()
rapha.save(model)
''',
    "safetensors_and_base64_blob": '''
import base64
import io
import torch
from safetensors.torch import save, load

model = torch.nn.Linear(2, 2)
blob = save(model.state_dict())
restored = load(blob)
header = base64.b64decode("aGVsbG8=")
buffer = io.BytesIO(blob)
print(len(header), len(buffer.getvalue()), sorted(restored))
''',
}
