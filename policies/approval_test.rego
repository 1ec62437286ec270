package rapha_test

import rego.v1

test_no_run_approval_by_default if {
	d := decision_for(good)
	not d.obligations.run_approval
}

test_a_dataset_asks_for_two_person_approval if {
	d := decision_for(good) with data.hospital.datasets["synthetic-cxr"].run_approval as "two_person"
	d.obligations.run_approval == "two_person"
	d.allow
}

test_a_purpose_asks_for_approval if {
	job := vary("job", {"params": {"epochs": 3, "purpose": "research"}})
	d := decision_for(job) with data.hospital.run_approval.purposes as {"research": "one"}
	d.obligations.run_approval == "one"
}

test_the_stricter_of_dataset_and_purpose_counts if {
	job := vary("job", {"params": {"epochs": 3, "purpose": "research"}})
	d := decision_for(job) with data.hospital.run_approval.purposes as {"research": "two_person"}
		with data.hospital.datasets["synthetic-cxr"].run_approval as "one"
	d.obligations.run_approval == "two_person"
}

test_an_unknown_mode_reaches_the_edge_as_unknown if {
	d := decision_for(good) with data.hospital.datasets["synthetic-cxr"].run_approval as "two-person"
	startswith(d.obligations.run_approval, "unknown")
}
