"""A sample of a dataset's source, read before ``rapha-edge datasets add`` registers it.

The sample goes through the very source code a job uses (``open_source`` and its
``index``), so a wrong path, a schema that does not fit the records, an unreachable PACS
or an empty folder is found by the administrator at the moment of the mistake, not by a
researcher whose job is refused later.

The report holds counts and the sources' fixed skip reasons only, never a file name, a
UID or a patient id, so it can be pasted into a ticket.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from jupyter_rapha.protocol.errors import BadInput

from .consent import OptOutList
from .registry import Dataset
from .sources import open_source

DEFAULT_SAMPLE = 200


@dataclass(frozen=True)
class SampleReport:
    examined: int  # records (files, rows, instances, patients) read
    records: int  # usable and consented
    patients: int  # distinct patients among the usable records
    opted_out: int  # records dropped by the opt-out list
    skipped: dict[str, int]  # fixed reason -> count
    limit: int | None

    def summary(self) -> str:
        scope = f"a sample of {self.examined}" if self.limit is not None and self.examined >= self.limit \
            else f"all {self.examined}"
        skipped = "; ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return (f"read {scope} record(s) of the source: {self.records} usable from {self.patients} patient(s), "
                f"{self.opted_out} opted out, skipped: {skipped}")


def sample_dataset(dataset: Dataset, location: Path | str, consent: OptOutList,
                   limit: int | None = DEFAULT_SAMPLE) -> SampleReport:
    """Index at most ``limit`` records (None: all); refuse a sample with nothing usable."""
    key = secrets.token_bytes(32)  # pseudonyms here only count patients; none is kept
    source = open_source(dataset, location, list(dataset.fields), key, consent)
    index = source.index(limit=limit)
    skipped = dict(index.skipped)
    report = SampleReport(
        examined=len(index.records) + sum(skipped.values()) + len(index.excluded),
        records=len(index.records), patients=len({ref.patient for ref in index.records}),
        opted_out=len(index.excluded), skipped=skipped, limit=limit)
    if report.examined == 0:
        raise BadInput(f"dataset {dataset.name}: the source holds no records",
                       hint="check --path: an empty folder, file or DICOMweb scope cannot be offered")
    if report.records == 0:
        raise BadInput(f"dataset {dataset.name}: none of the records read is usable ({report.summary()})",
                       hint="check that --schema and --source describe these records")
    return report
