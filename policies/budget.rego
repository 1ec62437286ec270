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
