# Budget ceilings: how many records, how long, how much, and how many epochs.
package rapha

import rego.v1

ceilings := data.hospital.budget

# Control: UK GDPR Art. 5(1)(c); Caldicott Principle 3 - no more records than the
# dataset and the hospital allow for one job.
deny contains sprintf("budget of %d records exceeds this dataset's limit of %d", [input.job.budget.max_records, input.dataset.max_records]) if {
	input.job.budget.max_records > input.dataset.max_records
}

deny contains sprintf("budget of %d records exceeds the per-job ceiling of %d", [input.job.budget.max_records, ceilings.max_records_per_job]) if {
	input.job.budget.max_records > ceilings.max_records_per_job
}

# Control: HIPAA 164.308(a)(7) (availability) - bounded run time per job.
deny contains sprintf("time budget of %d s exceeds the ceiling of %d s", [input.job.budget.max_seconds, ceilings.max_seconds]) if {
	input.job.budget.max_seconds > ceilings.max_seconds
}

# Control: NHS DSPT 1 (accountability) - the cost of a job is capped in advance.
job_cost := input.job.budget.max_records * to_number(input.dataset.price)

deny contains sprintf("the job could cost %v; the ceiling is %v", [job_cost, ceilings.max_cost_per_job]) if {
	job_cost > ceilings.max_cost_per_job
}

# Control: UK GDPR Art. 5(1)(c) - epochs bound how often each record is seen.
deny contains sprintf("%d epochs requested; at most %d are allowed", [input.job.params.epochs, ceilings.max_epochs]) if {
	input.job.params.epochs > ceilings.max_epochs
}

# Control: HIPAA 164.308(a)(7) (availability) - a job of several processes (ranks of
# one torch.distributed group) takes as many cores or GPUs; the hospital caps them.
deny contains sprintf("%d job processes requested; at most %d are allowed", [input.job.processes, ceilings.max_processes]) if {
	input.job.processes > ceilings.max_processes
}

# Obligations the runner enforces on an allowed job.
obligations["max_epochs"] := ceilings.max_epochs

obligations["max_seconds"] := min([input.job.budget.max_seconds, ceilings.max_seconds])

# Control: HIPAA 164.308(a)(7) (availability) - GPU time is bounded like wall time.
# GPU-seconds: the job's time budget times the GPUs the edge grants it (sandbox.gpus,
# read from the air-gap gate's evidence, which probed a sandbox holding those GPUs).
gpus_granted := count(input.airgap.gpus.devices) if input.airgap.gpus.devices
else := 0

job_gpu_seconds := input.job.budget.max_seconds * gpus_granted

deny contains sprintf("the job may use %d GPU-seconds; the ceiling is %d", [job_gpu_seconds, ceilings.max_gpu_seconds_per_job]) if {
	job_gpu_seconds > ceilings.max_gpu_seconds_per_job
}

deny contains sprintf("the job may use %d GPU-seconds; dataset %s allows %d", [job_gpu_seconds, input.dataset.name, limit]) if {
	limit := data.hospital.datasets[input.dataset.name].max_gpu_seconds
	job_gpu_seconds > limit
}
