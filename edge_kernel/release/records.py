"""The records a held job's checks look at: those it used and those held back from it.

Both sets are named by the pseudonyms the edge kept after the run (``provenance``) and
read again through the dataset's own source with the job's granted fields and
preprocessing (``data.reload``), so the checks see exactly what the job could have learnt.
"""

from __future__ import annotations

from typing import Any

from jupyter_rapha.protocol.jobspec import parse_jobspec

from ..data.registry import DatasetRegistry
from ..settings import Settings
from ..store import JobRecord
from .check_runner import Records


class DatasetRecords:
    def __init__(self, settings: Settings, datasets: DatasetRegistry) -> None:
        self.settings, self.datasets = settings, datasets

    def reload(self, job: JobRecord) -> tuple[Records, Records, dict[str, Any]]:
        from ..data.provenance import record_sets
        from ..data.reload import reload_records

        spec = parse_jobspec(job.spec)
        dataset = self.datasets.get(spec.dataset)
        sets = record_sets(self.settings.jobs_dir / job.job_id)
        used = reload_records(dataset, sets.used, spec, self.settings, reading=sets.reading)
        held_back = reload_records(dataset, sets.held_back, spec, self.settings, reading=sets.reading)
        # in the job's order of fields, as rapha.schema had them: the program's inputs follow it
        declared = dataset.schema()
        schema = {name: declared[name] for name in spec.fields}
        return used, held_back, schema
