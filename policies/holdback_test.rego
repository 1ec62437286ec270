package rapha_test

import rego.v1

test_holdback_from_the_hospital_default if {
	d := decision_for(good)
	d.obligations.holdback == {"fraction": 0.1, "minimum": 50}
}

test_holdback_a_dataset_sets_its_own if {
	d := decision_for(good) with data.hospital.datasets["synthetic-cxr"].holdback as {"fraction": 0.2, "minimum": 10}
	d.obligations.holdback == {"fraction": 0.2, "minimum": 10}
}

test_no_holdback_without_a_hospital_setting if {
	d := decision_for(good) with data.hospital.disclosure as {}
	not d.obligations.holdback
}
