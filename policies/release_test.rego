package rapha.release_test

import rego.v1

clean := {
	"dataset": "synthetic-cxr",
	"holdback_size": 50,
	"checks": {
		"record_copies": {"records_scanned": 48, "numbers_scanned": 5000, "records_matched": 0, "max_correlation": 0.2, "seconds": 0.1},
		"membership": {"status": "checked", "auc": 0.52, "tpr_at_1pct_fpr": 0.02, "records_used": 48, "holdback_size": 50, "attack": "loss_threshold"},
		"capacity": {"parameters": 1000, "records_used": 48, "parameters_per_record": 20.8}
	}
}

with_check(name, changes) := object.union(clean, {"checks": object.union(clean.checks, {name: object.union(clean.checks[name], changes)})})

# `with input as` is avoided on purpose (as in fixtures_test.rego): the engine handles
# `with` on input's parts.
decided(doc) := d if {
	d := data.rapha.release.decision with input.dataset as doc.dataset
		with input.checks as doc.checks
		with input.holdback_size as doc.holdback_size
}

test_clean_checks_on_an_auto_dataset_release if {
	d := decided(clean)
	d.decision == "release"
	d.rule == "checks_under_thresholds"
	d.mode == "auto"
	d.approvals_needed == 0
}

test_one_record_copy_refuses if {
	d := decided(with_check("record_copies", {"records_matched": 1}))
	d.decision == "refuse"
	d.rule == "record_copies"
	contains(d.reasons[0], "1 of the records")
}

test_a_record_copy_refuses_even_on_a_review_dataset if {
	d := decided(with_check("record_copies", {"records_matched": 48})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "review"}}
	d.decision == "refuse"
}

test_a_missing_check_refuses if {
	d := decided(object.union(clean, {"checks": {"record_copies": clean.checks.record_copies, "capacity": clean.checks.capacity}}))
	d.decision == "refuse"
	d.rule == "checks_incomplete"
}

test_an_unscanned_copy_check_refuses if {
	d := decided(object.union(clean, {"checks": object.union(clean.checks, {"record_copies": {"records_matched": "none"}})}))
	d.decision == "refuse"
}

# The edge-wide limit (0.6), on a dataset without one of its own (the demo's is 0.8).
test_mia_auc_over_threshold_refuses_by_default if {
	d := decided(with_check("membership", {"auc": 0.61})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto"}}
	d.decision == "refuse"
	d.rule == "membership_inference"
}

test_mia_auc_at_threshold_releases if {
	decided(with_check("membership", {"auc": 0.6})).decision == "release"
}

test_mia_auc_over_threshold_reviews_where_the_policy_says if {
	d := decided(with_check("membership", {"auc": 0.7})) with data.hospital.release.thresholds.mia_over_threshold as "review" with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto"}}
	d.decision == "review"
	d.approvals_needed == 1
}

test_the_demo_dataset_has_its_own_membership_limit if {
	decided(with_check("membership", {"auc": 0.79})).decision == "release"
	d := decided(with_check("membership", {"auc": 0.81}))
	d.decision == "refuse"
	d.rule == "membership_inference"
}

test_not_checkable_goes_to_review_by_default if {
	d := decided(with_check("membership", {"status": "not_checkable", "auc": null})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto"}}
	d.decision == "review"
	d.rule == "membership_not_checkable"
}

test_not_checkable_refuses_where_the_policy_says if {
	d := decided(with_check("membership", {"status": "not_checkable", "auc": null})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto", "thresholds": {"not_checkable": "refuse"}}}
	d.decision == "refuse"
}

test_an_unknown_membership_status_refuses if {
	decided(with_check("membership", {"status": "skipped"})).decision == "refuse"
}

test_review_mode_needs_one_checker if {
	d := decided(clean) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "review"}}
	d.decision == "review"
	d.approvals_needed == 1
	d.rule == "mode_review"
}

test_two_person_mode_needs_two_checkers if {
	d := decided(clean) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "two_person"}}
	d.decision == "review"
	d.approvals_needed == 2
}

test_an_unlisted_dataset_gets_the_default_mode if {
	d := decided(object.union(clean, {"dataset": "other"}))
	d.mode == "review"
	d.decision == "review"
}

test_an_unknown_mode_refuses if {
	d := decided(clean) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "sometimes"}}
	d.decision == "refuse"
	d.rule == "unknown_mode"
}

test_capacity_over_the_ceiling_goes_to_review if {
	d := decided(clean) with data.hospital.release.thresholds.review_parameters_per_record as 10
	d.decision == "review"
	d.rule == "capacity"
}

test_refusal_wins_over_review if {
	d := decided(with_check("record_copies", {"records_matched": 3})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "two_person"}}
	d.decision == "refuse"
}

test_the_demo_dataset_releases_an_unchecked_model_and_says_so if {
	d := decided(with_check("membership", {"status": "not_checkable", "auc": null}))
	d.decision == "release"
	d.rule == "membership_not_checkable_allowed"
	count(d.reasons) == 1
}

test_another_dataset_keeps_the_default_review if {
	d := decided(object.union(with_check("membership", {"status": "not_checkable", "auc": null}), {"dataset": "other"})) with data.hospital.release.datasets as {"other": {"mode": "auto"}}
	d.decision == "review"
}

test_a_dataset_threshold_replaces_the_edges if {
	d := decided(with_check("membership", {"auc": 0.65})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto", "thresholds": {"max_mia_auc": 0.7}}}
	d.decision == "release"
}

test_an_unknown_not_checkable_choice_refuses if {
	d := decided(with_check("membership", {"status": "not_checkable", "auc": null})) with data.hospital.release.datasets as {"synthetic-cxr": {"mode": "auto", "thresholds": {"not_checkable": "maybe"}}}
	d.decision == "refuse"
}
