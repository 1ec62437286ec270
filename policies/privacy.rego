# Differential privacy: which datasets require it, and the privacy budget of a DP job.
package rapha

import rego.v1

# A job is in DP mode when its cell calls rapha.fit_private (the edge reads the mode from
# the signed cell, jupyter_rapha/protocol/private.py): its code never receives a record,
# and the edge's own DP-SGD trainer produces the only weights that leave.
dp_job if input.job.mode == "dp"

dp_required := input.dataset.sensitivity in data.hospital.privacy.dp_required_sensitivities

# The dataset's privacy budget: data.hospital.datasets.NAME.privacy = {"epsilon", "delta"}.
privacy_budget := data.hospital.datasets[input.dataset.name].privacy

privacy_budget_valid if {
	is_number(privacy_budget.epsilon)
	privacy_budget.epsilon > 0
	is_number(privacy_budget.delta)
	privacy_budget.delta > 0
	privacy_budget.delta < 1
}

# Control: UK GDPR Art. 9 and Art. 32 - special-category data trains only with
# differential privacy.
obligations["dp_required"] := dp_required

deny contains sprintf("dataset '%s' may only be trained with differential privacy: hand the model and the loss to rapha.fit_private(model, loss_fn, epochs=..., batch_size=..., lr=..., max_grad_norm=...) instead of reading records with rapha.loader", [input.dataset.name]) if {
	dp_required
	not dp_job
}

# Control: UK GDPR Art. 25 - a DP job runs only against a budget the hospital set; without
# one the noise could not be chosen, so no job runs.
deny contains sprintf("the policy sets no usable privacy budget for dataset '%s': hospital.datasets.%s.privacy needs epsilon > 0 and 0 < delta < 1", [input.dataset.name, input.dataset.name]) if {
	dp_job
	not privacy_budget_valid
}

obligations["privacy"] := {"epsilon": privacy_budget.epsilon, "delta": privacy_budget.delta} if {
	dp_job
	privacy_budget_valid
}
