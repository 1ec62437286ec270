"""``rapha.save`` exports the model (torch.export) beside its weights, for the membership
check; a model that cannot be exported is saved all the same, without a program. One
real job carries the program out of the sandbox, with records held back from it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from edge_kernel.data.holdback import Holdback
from edge_kernel.inside.runtime import Rapha
from edge_kernel.sandbox.runner import run_job
from edge_kernel.wire.outputs import PROGRAM_FILE
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, make_spec

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 5, stride=2)
        self.norm = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(4 * 14 * 14, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.norm(self.conv(image))).flatten(1)))


class DataDependent(torch.nn.Module):
    """Branches on a value of its input: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(32 * 32, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.sum() > 0:
            return self.head(image.flatten(1))
        return -self.head(image.flatten(1))


def _rapha(tmp_path) -> Rapha:
    return Rapha(None, {}, SCHEMA, tmp_path / "out")  # type: ignore[arg-type]  # save needs no broker


def test_an_exportable_model_is_saved_with_its_program_carrying_the_same_weights(tmp_path):
    torch.manual_seed(0)
    model = Classifier().train()
    model(torch.rand(8, 1, 32, 32))  # moves the batch-norm statistics off their start
    _rapha(tmp_path).save(model)
    assert model.training  # the export judged it in eval mode, and left it as it was
    program = torch.export.load(str(tmp_path / "out" / PROGRAM_FILE))
    saved = load_file(str(tmp_path / "out" / "weights.safetensors"))
    assert program.state_dict.keys() == saved.keys()
    assert all(torch.equal(program.state_dict[name], saved[name]) for name in saved)
    images = torch.rand(5, 1, 32, 32)  # another batch size than the example's
    with torch.no_grad():
        assert torch.allclose(program.module()(images), model.eval()(images))


def test_a_model_that_cannot_be_exported_is_saved_without_a_program(tmp_path):
    _rapha(tmp_path).save(DataDependent())
    assert (tmp_path / "out" / "weights.safetensors").is_file()
    assert not (tmp_path / "out" / PROGRAM_FILE).exists()


def test_a_state_dict_or_a_schema_without_features_gives_no_program(tmp_path):
    _rapha(tmp_path).save(Classifier().state_dict())
    assert not (tmp_path / "out" / PROGRAM_FILE).exists()
    labels_only = Rapha(None, {}, {"finding": SCHEMA["finding"]}, tmp_path / "other")  # type: ignore[arg-type]
    labels_only.save(Classifier())
    assert not (tmp_path / "other" / PROGRAM_FILE).exists()


@pytest.mark.needs_gpu
def test_a_model_trained_on_the_gpu_is_exported_as_a_cpu_program(tmp_path):
    model = Classifier().cuda()
    _rapha(tmp_path).save(model)
    program = torch.export.load(str(tmp_path / "out" / PROGRAM_FILE))
    assert {tensor.device.type for tensor in program.state_dict.values()} == {"cpu"}
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        expected = model.eval()(images.cuda()).cpu()
        assert torch.allclose(program.module()(images), expected, atol=1e-4)


def test_a_program_past_the_sandbox_file_size_limit_is_left_out_not_fatal(tmp_path):
    # the sandbox caps each file's size (RLIMIT_FSIZE): the weights fit, their program does not
    script = (
        "import resource, sys, torch\n"
        "from pathlib import Path\n"
        "from edge_kernel.inside.runtime import Rapha\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
        f"model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 1))\n"
        f"Rapha(None, {{}}, {SCHEMA!r}, Path(sys.argv[1])).save(model)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "weights.safetensors").is_file()
    assert not (tmp_path / "out" / PROGRAM_FILE).exists()


def test_a_later_save_never_leaves_an_earlier_program_behind(tmp_path):
    rapha = _rapha(tmp_path)
    rapha.save(Classifier())
    assert (tmp_path / "out" / PROGRAM_FILE).is_file()
    rapha.save(DataDependent())  # these weights are what is released: no program stands for them
    assert not (tmp_path / "out" / PROGRAM_FILE).exists()


CELL = '''
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=2), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for batch in rapha.loader(batch_size=16):
    loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
rapha.save(model)
'''


def test_a_real_job_brings_its_program_out_and_never_sees_the_held_back_records(
        synth_folder, synth_entry, settings, tmp_path):
    spec = make_spec(CELL)
    outcome = run_job(spec, synth_entry, synth_folder, list(spec.fields), HMAC_KEY, tmp_path / "job", settings,
                      holdback=Holdback(0.25, 8))
    assert outcome.status == "completed", (outcome.error, outcome.fault)
    assert outcome.meter.holdback_size == SYNTH_RECORDS // 4
    assert outcome.meter.records_used == outcome.meter.cohort_size == SYNTH_RECORDS - SYNTH_RECORDS // 4
    assert set(outcome.meter.held_back_hex).isdisjoint(outcome.meter.pseudonyms_hex)
    assert outcome.program is not None
    program = torch.export.load(io.BytesIO(outcome.program))
    weights = load(outcome.weights)
    assert all(torch.equal(program.state_dict[name], weights[name]) for name in weights)

