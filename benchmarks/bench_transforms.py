"""Declared preprocessing, cost per record: the median time of each transform on one
512x512 synthetic CT slice (decoded once, outside the timing), with its ratio to the
default scaling by bits stored measured in the same run; the whole CT schema of
examples/schema-ct.json; and parsing plus decoding (Explicit VR against RLE Lossless) for scale.

Run: python benchmarks/bench_transforms.py [--runs N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.data import dicom_record, preprocess  # noqa: E402
from edge_kernel.data.registry import FieldSpec  # noqa: E402
from edge_kernel.data.synth import SynthOptions, make_synthetic_dataset  # noqa: E402
from edge_kernel.data.transforms import parse_transforms  # noqa: E402

SIZE, TARGET = 512, 256
CASES = {
    "modality_lut": (["modality_lut"], SIZE),
    "modality_lut + window": (["modality_lut", "window"], SIZE),
    "intensity (clip, scale_to)": ([{"op": "intensity", "clip": [0, 2048], "scale_to": [0, 1]}], SIZE),
    "invert_monochrome1": (["invert_monochrome1"], SIZE),
    "resize nearest 512->256": ([{"op": "resize", "interpolation": "nearest"}], TARGET),
    "resize bilinear 512->256": ([{"op": "resize", "interpolation": "bilinear"}], TARGET),
    "resize area 512->256": ([{"op": "resize", "interpolation": "area"}], TARGET),
    "schema-ct (lut, window, area)": (["modality_lut", {"op": "window", "center": 40, "width": 400},
                                       {"op": "resize", "interpolation": "area"}], TARGET),
}


def median_ms(step: Callable[[], object], runs: int) -> float:
    step()  # warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def slice_file(folder: Path, syntax: str) -> pydicom.Dataset:
    make_synthetic_dataset(folder, 1, seed=3, options=SynthOptions(sizes=((SIZE, SIZE),), modality="CT",
                                                                   transfer_syntax=syntax))
    return pydicom.dcmread(next(folder.iterdir()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=31)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        ds = slice_file(Path(tmp) / "explicit", "explicit")
        rle = slice_file(Path(tmp) / "rle", "rle")
        raw = ds.pixel_array
        baseline = median_ms(lambda: dicom_record._scaled(ds, raw).reshape(1, SIZE, SIZE).astype(np.float32), runs)
        print(f"{SIZE}x{SIZE} CT slice, median of {runs} runs per record")
        print(f"  {'default scaling by bits stored (baseline)':42s} {baseline:8.2f} ms   1.00x")
        for name, (steps, side) in CASES.items():
            spec = FieldSpec("float32", (1, side, side), "feature", parse_transforms(steps, name))
            cost = median_ms(lambda spec=spec: preprocess.apply(ds, raw, spec), runs)
            print(f"  {name:42s} {cost:8.2f} ms {cost / baseline:6.2f}x")
        for name, path in (("parse + decode Explicit VR Little Endian", ds), ("parse + decode RLE Lossless", rle)):
            data = Path(path.filename).read_bytes()
            cost = median_ms(lambda data=data: pydicom.dcmread(io.BytesIO(data)).pixel_array, runs)
            print(f"  {name:42s} {cost:8.2f} ms {cost / baseline:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
