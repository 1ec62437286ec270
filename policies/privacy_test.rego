package rapha_test

import rego.v1

special := object.union(good, {"dataset": object.union(good.dataset, {"sensitivity": "special-category"})})

dp_special := object.union(special, {"job": object.union(good.job, {"mode": "dp"})})

test_special_category_requires_dp if {
	d := decision_for(special)
	d.obligations.dp_required == true
	refuses(special, "may only be trained with differential privacy")
}

# data.json gives the demo dataset epsilon 8 and delta 0.001
test_dp_job_allowed_on_special_category if {
	d := decision_for(dp_special)
	d.allow == true
	d.obligations.privacy == {"epsilon": 8, "delta": 0.001}
	d.obligations.dp_required == true
}

test_dp_job_without_budget_refused if {
	refuses(dp_special, "no usable privacy budget for dataset 'synthetic-cxr'") with data.hospital.datasets as {}
}

test_dp_job_with_bad_delta_refused if {
	bad := {"synthetic-cxr": {"privacy": {"epsilon": 4, "delta": 1}}}
	refuses(dp_special, "no usable privacy budget") with data.hospital.datasets as bad
}

test_standard_job_has_no_privacy_obligation if {
	d := decision_for(good)
	not d.obligations.privacy
	d.obligations.dp_required == false
}
