"""The record-copy scan (edge_kernel/release/copies.py): each way of hiding a record in
released numbers is found with the right figures; honest models on demo-like data match
nothing; odd input (empty, NaN, inf, constant records) is handled without crashing."""

from __future__ import annotations

import numpy as np
import pytest

from edge_kernel.release import copies
from edge_kernel.release.copies import CopyScanOverload, released_numbers, scan_copies
from jupyter_rapha.protocol.errors import BadInput

RECORDS_USED = 48
SIDE = 32


def demo_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """Like the demo edge's synthetic chest X-ray: a blob on one side over 12-bit noise,
    scaled to [0, 1] by bits stored, as the broker hands it over."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    cx = rng.uniform(SIDE * 0.6, SIDE * 0.85) if label else rng.uniform(SIDE * 0.15, SIDE * 0.4)
    cy = rng.uniform(SIDE / 8, SIDE * 7 / 8)
    blob = 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (SIDE / 10) ** 2))
    stored = np.clip(blob + rng.normal(400.0, 120.0, (SIDE, SIDE)), 0, 4095).astype(np.uint16)
    return (stored.astype(np.float32) / np.float32(4095)).reshape(1, SIDE, SIDE)


@pytest.fixture(scope="module")
def records() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, RECORDS_USED)
    return [{"image": demo_image(rng, int(label)), "finding": np.array(label)} for label in labels]


@pytest.fixture(scope="module")
def flat(records) -> np.ndarray:
    return np.stack([record["image"].ravel() for record in records])


def honest_weights(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.03, shape).astype(np.float32)


def matched(released, records) -> int:
    return scan_copies(released, records).records_matched


# --- the attack of issue 14 and simple transforms ------------------------------------

def test_a_batch_copied_into_a_linear_weight_matches_every_record(records, flat):
    report = scan_copies({"head.weight": flat.copy(), "head.bias": np.zeros(RECORDS_USED, np.float32)}, records)
    assert report.figures()["records_matched"] == RECORDS_USED
    assert report.figures()["max_correlation"] == 1.0
    assert report.records_scanned == RECORDS_USED
    assert report.numbers_scanned == RECORDS_USED * SIDE * SIDE + RECORDS_USED


@pytest.mark.parametrize("scale, offset", [(0.01, -0.005), (-1.0, 0.0), (-3.5, 2.0), (1e-4, 0.0)])
def test_scaled_shifted_and_negated_copies_match(records, flat, scale, offset):
    released = {"w": (flat * scale + offset).astype(np.float32)}
    report = scan_copies(released, records)
    assert report.records_matched == RECORDS_USED
    assert report.max_correlation > 0.9999


def test_a_transposed_copy_matches(records, flat):
    assert matched({"w": np.ascontiguousarray(flat.T)}, records) == RECORDS_USED


def test_records_in_shuffled_rows_match(records, flat):
    order = np.random.default_rng(3).permutation(RECORDS_USED)
    assert matched({"w": flat[order]}, records) == RECORDS_USED


def test_a_record_permuted_within_its_row_and_scaled_matches(records, flat):
    permutation = np.random.default_rng(4).permutation(SIDE * SIDE)
    report = scan_copies({"w": (flat[:, permutation] * 0.02 - 0.01).astype(np.float32)}, records)
    assert report.records_matched == RECORDS_USED
    assert {match.stream for match in report.matches} == {"w permuted"}


def test_a_permuted_record_as_a_bias_vector_matches(records, flat):
    bias = -flat[5][np.random.default_rng(5).permutation(SIDE * SIDE)]
    report = scan_copies({"fc.bias": bias, "fc.weight": honest_weights((SIDE * SIDE, 8))}, records)
    assert [match.record for match in report.matches] == [5]


def test_a_reversed_copy_matches(records, flat):
    assert matched({"w": flat[:, ::-1].copy()}, records) == RECORDS_USED


def test_a_conv_kernel_holding_each_image_transposed_matches(records, flat):
    kernels = flat.reshape(RECORDS_USED, 1, SIDE, SIDE).transpose(0, 1, 3, 2).copy()
    assert matched({"conv.weight": kernels}, records) == RECORDS_USED


def test_a_record_reshaped_across_many_rows_matches(records, flat):
    # Linear(32, 1536): each image's 32 rows become 32 consecutive weight rows
    assert matched({"w": flat.reshape(RECORDS_USED * SIDE, SIDE)}, records) == RECORDS_USED


def test_a_record_stored_down_a_column_of_a_wide_matrix_matches(records, flat):
    matrix = honest_weights((SIDE * SIDE, 64))
    matrix[:, 10] = flat[2]
    report = scan_copies({"w": matrix}, records)
    assert [match.record for match in report.matches] == [2]


def test_records_split_across_tensors_match(records, flat):
    released = {f"layer{index:02d}.weight": part for index, part in enumerate(np.split(flat[:4].ravel(), 64))}
    assert matched(released, records) == 4


def test_the_first_half_of_a_record_matches_and_counts_its_numbers(records, flat):
    weights = honest_weights((RECORDS_USED, SIDE * SIDE))
    weights[:, :512] = flat[:, :512]
    report = scan_copies({"w": weights}, records)
    assert report.records_matched == RECORDS_USED
    # an honest weight just past the copy may by chance sit on the fitted map too
    assert all(512 <= match.numbers <= 520 for match in report.matches)


def test_a_short_fragment_of_a_hundred_numbers_matches(records, flat):
    weights = honest_weights((4, 256))
    weights[1, 37:137] = flat[9, 300:400] * 0.1
    report = scan_copies({"w": weights}, records)
    assert [match.record for match in report.matches] == [9]
    assert 100 <= report.matches[0].numbers <= 108


def test_a_downsampled_copy_matches(records, flat):
    pooled = flat.reshape(RECORDS_USED, SIDE // 2, 2, SIDE // 2, 2).mean(axis=(2, 4)).reshape(RECORDS_USED, -1)
    report = scan_copies({"w": pooled}, records)
    assert report.records_matched == RECORDS_USED
    assert {match.form for match in report.matches} == {"downsampled 2x"}


def test_a_copy_quantised_to_8_bits_matches(records, flat):
    assert matched({"w": np.round(flat * 255).astype(np.uint8)}, records) == RECORDS_USED


# --- bits -------------------------------------------------------------------------------

def with_low_bits(weights: np.ndarray, payload: np.ndarray, bits: int) -> np.ndarray:
    mask = np.uint32((1 << bits) - 1)
    hidden = (weights.view(np.uint32) & ~mask) | (payload.astype(np.uint32) & mask)
    return hidden.view(np.float32)


def test_record_bytes_in_the_low_8_mantissa_bits_of_honest_weights_match(records, flat):
    weights = honest_weights(flat.shape)
    hidden = with_low_bits(weights, np.round(flat * 255), 8)
    assert np.max(np.abs(hidden - weights) / np.abs(weights)) < 1e-4  # invisible as weights
    report = scan_copies({"w": hidden}, records)
    assert report.records_matched == RECORDS_USED
    assert {match.stream for match in report.matches} == {"low 8 bits"}


def test_stored_12_bit_pixels_in_the_low_16_bits_match(records, flat):
    hidden = with_low_bits(honest_weights(flat.shape), np.round(flat * 4095), 16)
    assert matched({"w": hidden}, records) == RECORDS_USED


def test_record_float32_bits_split_over_two_weights_low_halves_match(records, flat):
    bits = flat[:3].ravel().view(np.uint32)
    payload = np.stack([bits >> 16, bits & 0xFFFF], axis=1).ravel()
    hidden = with_low_bits(honest_weights(payload.shape), payload, 16)
    assert matched({"w": hidden}, records) == 3


def test_record_float32_bit_patterns_saved_as_int32_match(records, flat):
    assert matched({"w": flat[:6].view(np.int32)}, records) == 6


def test_record_float32_bytes_saved_as_uint8_match(records, flat):
    assert matched({"w": flat[:6].ravel().view(np.uint8)}, records) == 6


# --- metrics, names, shapes -------------------------------------------------------------

def test_a_record_logged_as_metric_values_matches(records, flat):
    numbers = released_numbers({"w": honest_weights((2, 8))}, {"loss": list(map(float, flat[3] * 10 + 1))})
    report = scan_copies(numbers, records)
    assert [match.record for match in report.matches] == [3]


def test_record_bytes_logged_as_small_integer_metrics_match(records, flat):
    as_bytes = [float(value) for value in flat[4].view(np.uint8)]
    numbers = released_numbers({"w": honest_weights((2, 8))}, {"step": as_bytes})
    report = scan_copies(numbers, records)
    assert [match.record for match in report.matches] == [4]


def test_8_bit_pixels_logged_as_metrics_match(records, flat):
    numbers = released_numbers({}, {"acc": [float(value) for value in np.round(flat[8] * 255)]})
    assert matched(numbers, records) == 1


def test_a_record_spelled_in_tensor_shapes_matches(records, flat):
    pixels = np.round(flat[6] * 255).astype(int) + 1
    weights = {f"p{index:04d}": np.zeros(int(pixel), np.float32) for index, pixel in enumerate(pixels)}
    report = scan_copies(released_numbers(weights, {}), records)
    assert [match.record for match in report.matches] == [6]


def test_a_record_spelled_in_tensor_names_matches(records, flat):
    pixels = np.round(flat[7] * 255).astype(int)
    weights = {f"b{index:04d}_{pixel}": np.zeros(1, np.float32) for index, pixel in enumerate(pixels)}
    report = scan_copies(released_numbers(weights, {}), records)
    assert [match.record for match in report.matches] == [7]


def test_released_numbers_reads_names_and_shapes_as_numbers():
    numbers = released_numbers({"fc1.weight": np.zeros((3, 4), np.float32)}, {"loss": [0.5, 0.25]})
    assert numbers["shapes"].tolist() == [3.0, 4.0]
    assert numbers["names/numbers 0"].tolist() == [1.0]
    assert numbers["names/characters"].tolist() == [float(ord(c)) for c in "fc1.weightloss"]
    assert numbers["metrics/loss"].tolist() == [0.5, 0.25]
    assert numbers["weights/fc1.weight"].shape == (3, 4)


# --- honest models match nothing --------------------------------------------------------

def train(model, records, epochs: int = 6):
    import torch

    torch.manual_seed(0)
    images = torch.tensor(np.stack([record["image"] for record in records]))
    labels = torch.tensor([int(record["finding"]) for record in records])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(epochs):
        for start in range(0, len(records), 16):
            loss = torch.nn.functional.cross_entropy(model(images[start:start + 16]), labels[start:start + 16])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    weights = {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}
    return released_numbers(weights, {"loss": losses, "epoch": [float(e) for e in range(epochs)]})


def honest_models():
    from torch import nn

    torch_cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)),
                              nn.Flatten(), nn.Linear(64, 2))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 256), nn.ReLU(), nn.Linear(256, 2))
    logistic = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 2))
    return {"cnn": torch_cnn, "mlp": mlp, "logistic regression": logistic}


@pytest.mark.parametrize("kind", ["cnn", "mlp", "logistic regression"])
def test_an_honest_model_trained_on_the_records_matches_none(records, kind):
    pytest.importorskip("torch")
    report = scan_copies(train(honest_models()[kind], records), records)
    assert report.records_matched == 0
    assert report.records_scanned == RECORDS_USED
    assert report.max_correlation < copies.DEFAULT_MIN_CORRELATION


def test_honest_weights_of_a_million_numbers_match_none(records):
    released = {"a": honest_weights((1024, 1024)), "b": honest_weights((1000,), seed=2)}
    assert matched(released, records) == 0


# --- signatures, edge cases, faults -----------------------------------------------------

def test_constant_records_have_no_signature_and_match_nothing():
    padding = [{"image": np.zeros((1, SIDE, SIDE), np.float32)}, {"image": np.full((1, SIDE, SIDE), 0.5)}]
    report = scan_copies({"w": np.zeros((4, SIDE * SIDE), np.float32), "b": np.full(SIDE * SIDE, 0.5)}, padding)
    assert (report.records_scanned, report.records_matched) == (0, 0)


def test_a_smooth_gradient_record_does_not_match_a_ramp_in_honest_weights():
    ramp = np.linspace(0, 1, SIDE * SIDE, dtype=np.float32).reshape(1, SIDE, SIDE)
    report = scan_copies({"position": np.linspace(-1, 1, 4096, dtype=np.float32)}, [{"image": ramp}])
    assert (report.records_scanned, report.records_matched) == (0, 0)


def test_a_half_padded_record_matches_by_its_noisy_half(records, flat):
    padded = flat[0].copy()
    padded[:512] = 0.0
    report = scan_copies({"w": padded * 2}, [{"image": padded.reshape(1, SIDE, SIDE)}])
    assert report.records_matched == 1


def test_scalar_fields_such_as_labels_are_not_signatures():
    report = scan_copies({"w": np.arange(64, dtype=np.float32)}, [{"finding": np.array(1), "age": np.array(40.0)}])
    assert report.figures() == {"records_scanned": 0, "numbers_scanned": 64, "records_matched": 0,
                                "max_correlation": 0.0, "seconds": report.figures()["seconds"]}


def test_an_empty_release_scans_nothing(records):
    report = scan_copies({}, records)
    assert (report.numbers_scanned, report.records_matched, report.max_correlation) == (0, 0, 0.0)
    assert report.records_scanned == RECORDS_USED


def test_no_records_match_nothing(flat):
    report = scan_copies({"w": flat}, [])
    assert (report.records_scanned, report.records_matched) == (0, 0)
    assert report.numbers_scanned == flat.size


def test_empty_and_zero_sized_tensors_are_handled(records):
    report = scan_copies({"e": np.zeros((0, 5), np.float32), "s": np.float32(3.0)}, records)
    assert report.records_matched == 0


def test_nan_and_inf_in_tensors_do_not_hide_a_copy_or_crash(records, flat):
    weights = flat[:4].copy()
    weights[:, ::97] = np.nan
    weights[:, 5::101] = np.inf
    weights[0, 1] = -np.inf
    report = scan_copies({"w": weights, "all_nan": np.full(100, np.nan, np.float32)}, records)
    assert report.records_matched == 4


def test_nan_in_a_record_is_handled(flat):
    record = flat[0].copy()
    record[::50] = np.nan
    report = scan_copies({"w": np.nan_to_num(record)}, [{"image": record}])
    assert report.records_matched == 1


def test_figures_are_json_numbers_only(records, flat):
    import json

    figures = scan_copies({"secret_name": flat[:2]}, records).figures()
    assert set(figures) == {"records_scanned", "numbers_scanned", "records_matched", "max_correlation", "seconds"}
    assert all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in figures.values())
    assert "secret_name" not in json.dumps(figures)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, float("nan")])
def test_a_threshold_outside_zero_to_one_is_refused(records, threshold):
    with pytest.raises(BadInput, match="min_correlation"):
        scan_copies({}, records, min_correlation=threshold)


def test_a_flood_of_candidate_alignments_fails_the_check(records, flat, monkeypatch):
    monkeypatch.setattr(copies, "MAX_MEASURED", 3)
    # same ups and downs as the records, magnitudes off any affine map
    noise = np.random.default_rng(9).uniform(0.5, 2.0, flat[:8].shape)
    decoys = np.cumsum(np.sign(np.diff(flat[:8], axis=1, prepend=0)) * noise, axis=1)
    with pytest.raises(CopyScanOverload) as raised:
        scan_copies({"w": decoys}, records)
    assert "refused" in raised.value.diagnostics()


# --- shuffled across records ----------------------------------------------------------

def test_a_subset_of_off_grid_records_shuffled_together_in_one_tensor_matches_each(flat):
    # records whose preprocessing left them off the 12-bit grid: each has its own values
    jitter = np.random.default_rng(2).normal(0, 1e-4, flat.shape)
    resized = [{"image": (image + noise).astype(np.float32)} for image, noise in zip(flat, jitter, strict=True)]
    pooled = np.concatenate([record["image"].ravel() for record in resized[:10]])
    mixed = pooled[np.random.default_rng(6).permutation(len(pooled))].reshape(40, -1)
    report = scan_copies({"w": mixed}, resized)
    assert sorted(match.record for match in report.matches) == list(range(10))
    assert {match.stream for match in report.matches} == {"w values"}


def test_records_on_a_shared_grid_are_not_matched_by_values_of_others(records, flat):
    mixed = flat[:10].ravel()[np.random.default_rng(6).permutation(10 * SIDE * SIDE)]
    report = scan_copies({"w": mixed}, records)
    assert not [match for match in report.matches if match.record >= 10]


def test_all_records_shuffled_together_and_scaled_match(records, flat):
    mixed = flat.ravel()[np.random.default_rng(6).permutation(flat.size)] * -0.02 + 0.01
    report = scan_copies({"w": mixed.reshape(96, 512)}, records)
    assert report.records_matched == RECORDS_USED
    assert {match.stream for match in report.matches} == {"w pooled"}


def test_a_mask_record_of_zeros_and_ones_is_not_held_by_an_honest_tensor_of_zeros_and_ones():
    mask = (np.random.default_rng(1).random((1, SIDE, SIDE)) > 0.7).astype(np.float32)
    honest = {"bn.weight": np.ones(4096, np.float32), "bn.bias": np.zeros(4096, np.float32)}
    report = scan_copies(honest, [{"mask": mask}])
    assert report.records_matched == 0


@pytest.mark.parametrize("length", [0, 48, 49, 50, 57, 130])
def test_window_keys_are_the_up_bits_of_each_window(length):
    from edge_kernel.release.copy_keys import KEY_BITS, window_keys

    numbers = np.random.default_rng(length).normal(size=length)
    expected = [sum(int(numbers[i + j + 1] > numbers[i + j]) << j for j in range(KEY_BITS))
                for i in range(max(0, length - KEY_BITS))]
    assert window_keys(numbers).tolist() == expected


def test_check_main_scans_read_only_tensors_and_its_figures_pass_the_checks_shape(records, flat):
    import json
    import struct

    from edge_kernel.release.check_main import copy_figures, read_tensors
    from edge_kernel.release.checks import parse_check

    body = flat[:5].tobytes() + np.arange(3, dtype=np.int64).tobytes()
    header = {"head.weight": {"dtype": "F32", "shape": [5, SIDE * SIDE], "data_offsets": [0, flat[:5].nbytes]},
              "steps": {"dtype": "I64", "shape": [3], "data_offsets": [flat[:5].nbytes, len(body)]}}
    encoded = json.dumps(header).encode()
    tensors = read_tensors(struct.pack("<Q", len(encoded)) + encoded + body)
    assert not tensors["head.weight"].flags.writeable
    figures = parse_check("record_copies", copy_figures(tensors, {"loss": [0.5, 0.4]}, records))
    assert (figures["records_matched"], figures["max_correlation"]) == (5, 1.0)


def test_6_bit_pixels_in_the_low_mantissa_bits_of_float16_weights_match(records, flat):
    weights = honest_weights(flat[:4].shape).astype(np.float16)
    pixels = np.round(flat[:4] * 63 / flat[:4].max()).astype(np.uint16)
    hidden = ((weights.view(np.uint16) & ~np.uint16(0x3F)) | pixels).view(np.float16)
    report = scan_copies({"w": hidden}, records)
    assert report.records_matched == 4
    assert {match.stream for match in report.matches} == {"float16 low 6 bits"}


def test_a_record_of_two_image_fields_counts_once_and_either_field_matches(records, flat):
    two = [{"image": record["image"], "mask_free_view": record["image"][:, ::-1, :].copy()} for record in records[:6]]
    report = scan_copies({"w": two[3]["mask_free_view"].ravel() * 2.0}, two)
    assert report.records_scanned == 6
    assert [match.record for match in report.matches] == [3]
