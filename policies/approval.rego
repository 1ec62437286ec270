# A data steward's approval before a job's code runs, where the hospital asks for it.
package rapha

import rego.v1

# Control: HIPAA 164.308(a)(4)(ii)(B) (access authorisation); Caldicott Principle 1 -
# a dataset (data.hospital.datasets[NAME].run_approval) or a purpose
# (data.hospital.run_approval.purposes[PURPOSE]) may ask that one data steward
# ("one") or two distinct ones ("two_person") approve each job before its code runs;
# the stricter of the two asks counts. The edge holds the job in awaiting_approval until
# then (edge_kernel/run_approval.py). Unset: "none", the job runs as before.
approval_modes := ["none", "one", "two_person"]

approval_asked contains data.hospital.datasets[input.dataset.name].run_approval

approval_asked contains data.hospital.run_approval.purposes[input.job.params.purpose]

approval_unknown := {mode | some mode in approval_asked; not mode in approval_modes}

approval_rank := max({i | some mode in approval_asked; approval_modes[i] == mode})

obligations["run_approval"] := approval_modes[approval_rank] if {
	count(approval_unknown) == 0
	count(approval_asked) > 0
}

# A mode the edge does not know reaches it as it was written, and the edge denies the job (S4).
obligations["run_approval"] := sprintf("unknown: %v", [sort(approval_unknown)]) if {
	count(approval_unknown) > 0
}
