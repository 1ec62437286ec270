"""Membership inference on the exported program: the attack's figures against a
hand-checked example, an overfit model caught and a generalising one not, and every way
the program could misstate what was released ends as not checkable or a fault."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edge_kernel.inside.runtime import Rapha
from edge_kernel.release.membership import (MembershipFault, attack_figures, capacity, membership_figures,
                                            per_record_loss, roc_auc, tpr_at_fpr)
from edge_kernel.wire.outputs import PROGRAM_FILE

FEATURES = 16
SCHEMA = {"x": {"dtype": "float32", "shape": [FEATURES], "kind": "feature"},
          "y": {"dtype": "int64", "shape": [], "kind": "label"}}


# --- the attack's arithmetic, by hand --------------------------------------------------

def test_auc_counts_pairs_and_half_ties():
    # member scores 1, 2, 3 against non-members 2, 0: of 6 pairs, (1,0) (2,0) (3,2) (3,0)
    # are won and (2,2) is a tie: (4 + 0.5) / 6
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 0.0])) == pytest.approx(0.75)
    assert roc_auc(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_tpr_at_one_percent_fpr_allows_at_most_that_many_false_positives():
    nonmembers = np.arange(200.0)  # 1 % of 200 is 2: the threshold is the third highest, 197
    members = np.array([198.5, 199.5, 197.0, 50.0])
    assert tpr_at_fpr(members, nonmembers, 0.01) == 0.5  # 198.5 and 199.5; 197 is not above it
    # with 50 non-members not even one false positive is allowed: above the highest only
    assert tpr_at_fpr(np.array([10.0, 49.0, 49.5]), np.arange(50.0), 0.01) == pytest.approx(1 / 3)


def test_figures_take_the_better_direction_and_are_rounded():
    lower_for_members = attack_figures(np.array([0.1, 0.2, 0.3]), np.array([0.9, 1.0, 1.1]))
    higher_for_members = attack_figures(np.array([0.9, 1.0, 1.1]), np.array([0.1, 0.2, 0.3]))
    assert lower_for_members["auc"] == higher_for_members["auc"] == 1.0
    assert lower_for_members["tpr_at_1pct_fpr"] == higher_for_members["tpr_at_1pct_fpr"] == 1.0
    mixed = attack_figures(np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.6, 0.8]))
    assert mixed["auc"] == round(5 / 9, 3)
    assert mixed["auc_null_sd"] == round(np.sqrt(7 / 108), 3)


def test_the_loss_follows_the_label():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    cross_entropy = per_record_loss(logits, torch.tensor([0, 0]))
    assert cross_entropy[0] < cross_entropy[1]
    assert per_record_loss(torch.tensor([[3.0], [-3.0]]), torch.tensor([1, 1])).shape == (2,)  # one logit
    squared = per_record_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0]))
    assert squared.tolist() == [0.0, 4.0]
    assert per_record_loss(logits, torch.tensor([0, 5])) is None  # a class the output has not
    assert per_record_loss(torch.zeros(2, 3), torch.zeros(2, 2)) is None  # shapes that do not fit


def test_capacity_is_parameters_per_record_used():
    released = {"w": np.zeros((10, 5)), "b": np.zeros(5)}
    assert capacity(released, 11) == {"parameters": 55, "records_used": 11, "parameters_per_record": 5.0}


# --- real models, exported by the job runtime -----------------------------------------

def _records(features: np.ndarray, labels: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"x": features[i].astype(np.float32), "y": np.asarray(labels[i], dtype=np.int64)}
            for i in range(len(labels))]


def _train(model: torch.nn.Module, records, steps: int, lr: float = 0.01) -> torch.nn.Module:
    features = torch.from_numpy(np.stack([r["x"] for r in records]))
    labels = torch.from_numpy(np.stack([r["y"] for r in records]))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(features), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def _saved(model: torch.nn.Module, tmp_path):
    Rapha(None, {}, SCHEMA, tmp_path).save(model)  # type: ignore[arg-type]  # save needs no broker
    return tmp_path / PROGRAM_FILE


def _mlp(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))


def test_a_model_that_memorised_its_records_is_caught(tmp_path):
    rng = np.random.default_rng(1)
    # labels are coin flips: nothing to learn but the records themselves
    used = _records(rng.normal(size=(60, FEATURES)), rng.integers(0, 2, 60))
    held_back = _records(rng.normal(size=(60, FEATURES)), rng.integers(0, 2, 60))
    torch.manual_seed(0)
    model = _train(_mlp(256), used, steps=400)
    figures = membership_figures(_saved(model, tmp_path), used, held_back, SCHEMA)
    assert figures["status"] == "checked", figures
    # far past chance (0.5, spread auc_null_sd 0.05); the loss threshold is a weak attack at
    # low FPR: a held-back record the model happens to call right confidently scores as a member
    assert figures["auc"] > 0.8 and figures["auc"] > 0.5 + 5 * figures["auc_null_sd"], figures
    assert (figures["records_used"], figures["holdback_size"], figures["attack"]) == (60, 60, "loss_threshold")


def test_a_model_that_learnt_the_rule_is_not_flagged(tmp_path):
    rng = np.random.default_rng(2)
    weights = rng.normal(size=FEATURES)

    def population(n):
        features = rng.normal(size=(n, FEATURES))
        return _records(features, (features @ weights > 0).astype(np.int64))

    used, held_back = population(400), population(400)
    torch.manual_seed(0)
    model = _train(torch.nn.Linear(FEATURES, 2), used, steps=200, lr=0.05)
    figures = membership_figures(_saved(model, tmp_path), used, held_back, SCHEMA)
    assert figures["status"] == "checked", figures
    assert abs(figures["auc"] - 0.5) < 0.1, figures
    assert figures["tpr_at_1pct_fpr"] < 0.1, figures


@pytest.fixture
def small_sets():
    rng = np.random.default_rng(3)
    return (_records(rng.normal(size=(20, FEATURES)), rng.integers(0, 2, 20)),
            _records(rng.normal(size=(20, FEATURES)), rng.integers(0, 2, 20)))


def test_no_program_no_holdback_or_no_label_is_not_checkable(tmp_path, small_sets):
    used, held_back = small_sets
    assert membership_figures(None, used, held_back, SCHEMA)["status"] == "not_checkable"
    assert membership_figures(tmp_path / "absent.pt2", used, held_back, SCHEMA)["status"] == "not_checkable"
    program = _saved(_mlp(8), tmp_path)
    no_holdback = membership_figures(program, used, [], SCHEMA)
    assert (no_holdback["status"], no_holdback["holdback_size"], no_holdback["auc"]) == ("not_checkable", 0, None)
    no_label = membership_figures(program, used, held_back, {"x": SCHEMA["x"]})
    assert no_label["status"] == "not_checkable"


def test_a_program_whose_weights_are_not_the_released_ones_is_a_fault(tmp_path, small_sets):
    used, held_back = small_sets
    model = _mlp(8)
    program = _saved(model, tmp_path)
    # the job writes other weights than those it exported: the check must not judge a stand-in
    tampered = {name: value.clone() + 1 for name, value in model.state_dict().items()}
    save_file(tampered, str(tmp_path / "weights.safetensors"))
    with pytest.raises(MembershipFault):
        membership_figures(program, used, held_back, SCHEMA)
    extra = {**model.state_dict(), "hidden.copy": torch.zeros(4)}
    with pytest.raises(MembershipFault):
        membership_figures(program, used, held_back, SCHEMA, released=extra)
    (tmp_path / "weights.safetensors").unlink()
    with pytest.raises(MembershipFault):
        membership_figures(program, used, held_back, SCHEMA)


class IgnoresInput(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 2) + 0 * x[:, :2]


class LeavesAWeightOut(torch.nn.Module):
    """A decoy: ``store`` (say, records) is released but the judged output never uses it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(FEATURES, 2)
        self.store = torch.nn.Parameter(torch.ones(64, FEATURES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) + 0 * self.store.sum()


@pytest.mark.parametrize("decoy", [IgnoresInput, LeavesAWeightOut])
def test_a_program_that_does_not_judge_its_weights_is_not_checkable(tmp_path, small_sets, decoy):
    used, held_back = small_sets
    figures = membership_figures(_saved(decoy(), tmp_path), used, held_back, SCHEMA)
    assert figures["status"] == "not_checkable" and figures["auc"] is None, figures


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scan, self.age = torch.nn.Linear(FEATURES, 2), torch.nn.Linear(1, 2)

    def forward(self, scan: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        return self.scan(scan) + self.age(age)


def test_features_reach_the_program_in_the_jobs_order_of_fields(tmp_path):
    schema = {"scan": SCHEMA["x"], "age": {"dtype": "float32", "shape": [1], "kind": "feature"}, "y": SCHEMA["y"]}
    rng = np.random.default_rng(4)
    records = [{"scan": rng.normal(size=FEATURES).astype(np.float32), "age": rng.normal(size=1).astype(np.float32),
                "y": np.asarray(i % 2, dtype=np.int64)} for i in range(20)]
    Rapha(None, {}, schema, tmp_path).save(TwoInputs())  # type: ignore[arg-type]
    figures = membership_figures(tmp_path / PROGRAM_FILE, records[:10], records[10:], schema)
    assert figures["status"] == "checked", figures
