package rapha_test

import rego.v1

test_over_dataset_limit_denied if {
	refuses(vary("job", {"budget": {"max_records": 1001, "max_seconds": 600}}), "exceeds this dataset's limit")
}

test_at_dataset_limit_allowed if allows(vary("job", {"budget": {"max_records": 1000, "max_seconds": 600}}))

test_over_per_job_ceiling_denied if {
	refuses(vary("job", {"budget": {"max_records": 100, "max_seconds": 600}}), "per-job ceiling") with data.hospital.budget.max_records_per_job as 50
}

test_over_time_ceiling_denied if {
	refuses(vary("job", {"budget": {"max_records": 100, "max_seconds": 86401}}), "time budget")
}

test_over_cost_ceiling_denied if refuses(vary("dataset", {"price": "100"}), "could cost")

test_within_cost_ceiling_allowed if allows(vary("dataset", {"price": "50"}))

test_too_many_epochs_denied if refuses(vary("job", {"params": {"epochs": 101}}), "101 epochs requested")

test_obligations_carry_limits if {
	d := decision_for(good)
	d.obligations.max_epochs == 100
	d.obligations.max_seconds == 600
	d.obligations.dp_required == false
}

two_gpus := {"sealed": true, "gpus": {"driver_version": "550.54.15", "devices": [{"model": "NVIDIA H200", "memory_mib": null}, {"model": "NVIDIA H200", "memory_mib": null}]}}

test_gpu_seconds_within_the_ceiling_allowed if allows(vary("airgap", two_gpus))

test_gpu_seconds_over_the_ceiling_denied if {
	refuses(vary("airgap", two_gpus), "1200 GPU-seconds; the ceiling is 1000") with data.hospital.budget.max_gpu_seconds_per_job as 1000
}

test_gpu_seconds_over_a_datasets_limit_denied if {
	refuses(vary("airgap", two_gpus), "dataset synthetic-cxr allows 600") with data.hospital.datasets["synthetic-cxr"].max_gpu_seconds as 600
}

test_no_gpus_no_gpu_seconds if {
	allows(good) with data.hospital.datasets["synthetic-cxr"].max_gpu_seconds as 0
}

test_processes_above_the_ceiling_denied if {
	refuses(object.union(good, {"job": object.union(good.job, {"processes": 9}), "airgap": {"sealed": true, "socket_filter": "inet-loopback"}}), "9 job processes requested; at most 8")
}
