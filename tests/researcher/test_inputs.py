"""--artifact and --include, checked before anything leaves the notebook."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from jupyter_rapha.inputs import file_sha256, parse_artifact_args, read_includes
from jupyter_rapha.protocol.errors import BadInput


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "backbone.safetensors"
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(path))
    return path


def test_a_safetensors_file_is_taken_with_its_digest_and_size(weights):
    [artifact] = parse_artifact_args([f"backbone={weights}"])
    assert (artifact.name, artifact.bytes, artifact.sha256) == ("backbone", weights.stat().st_size,
                                                                file_sha256(weights))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])  # by content, whatever the name
def test_a_torch_checkpoint_is_refused_with_the_way_to_convert_it(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(BadInput) as refused:
        parse_artifact_args([f"backbone={path}"])
    assert "zip file" in refused.value.message and "only safetensors" in refused.value.message
    assert "save_file(torch.load('MODEL.pt', weights_only=True)" in refused.value.diagnostics()


def test_a_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(BadInput, match="is a pickle"):
        parse_artifact_args([f"backbone={path}"])


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(BadInput, match="not a safetensors file"):
        parse_artifact_args([f"backbone={path}"])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BadInput, match="--artifact backbone: no file at"):
        parse_artifact_args([f"backbone={tmp_path / 'nowhere.safetensors'}"])


def test_a_name_given_twice_is_refused(weights):
    with pytest.raises(BadInput, match="given twice"):
        parse_artifact_args([f"backbone={weights}", f"backbone={weights}"])


@pytest.mark.parametrize("item", ["backbone", "=x.safetensors", "backbone="])
def test_an_argument_without_name_and_path_is_refused(item):
    with pytest.raises(BadInput, match="NAME=PATH"):
        parse_artifact_args([item])


def test_a_folder_includes_its_python_files_under_its_name(tmp_path):
    lib = tmp_path / "mylib"
    (lib / "nets").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "nets" / "small.py").write_text("SIZE = 3\n")
    (lib / "README.md").write_text("not code")
    (tmp_path / "helpers.py").write_text("X = 1\n")
    files = read_includes([str(lib), str(tmp_path / "helpers.py")])
    assert sorted(f.module for f in files) == ["helpers", "mylib", "mylib.nets.small"]


def test_an_include_that_is_not_python_or_missing_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInput, match="not a .py file"):
        read_includes([str(tmp_path / "notes.txt")])
    with pytest.raises(BadInput, match="no such file or folder"):
        read_includes([str(tmp_path / "gone.py")])


def test_a_submission_carries_artifacts_and_includes_through_the_server(weights, tmp_path):
    from jupyter_rapha.routing.submission import Submission, parse_submission

    (tmp_path / "helpers.py").write_text("X = 1\n")
    [artifact] = parse_artifact_args([f"backbone={weights}"])
    submission = Submission(dataset="synthetic-cxr", code="import helpers\n", budget=4,
                            artifacts=(artifact.to_dict(),), includes=read_includes([str(tmp_path / "helpers.py")]))
    assert parse_submission(submission.to_dict()) == submission
    body = dict(submission.to_dict(), artifacts=[dict(artifact.to_dict(), sha256="zz")])
    with pytest.raises(BadInput, match="as the notebook checked it"):
        parse_submission(body)


def test_an_artifact_swapped_after_its_check_is_refused_before_upload(weights, tmp_path):
    from jupyter_rapha.inputs import check_format

    [artifact] = parse_artifact_args([f"backbone={weights}"])
    torch.save({"w": torch.zeros(2)}, weights)  # replaced by a checkpoint after the check
    with pytest.raises(BadInput, match="changed since it was checked|zip file"):
        check_format(artifact.name, artifact.path, artifact.bytes)
