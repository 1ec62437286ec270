package rapha_test

import rego.v1

test_unknown_dataset_denied if refuses(vary("job", {"dataset": "oncology-ct"}), "not released for training")

test_released_dataset_allowed if allows(vary("job", {"dataset": "synthetic-cxr"}))

test_role_without_grant_denied if refuses(vary("researcher", {"roles": ["auditor"]}), "no role granted access")

test_named_researcher_granted_without_role if {
	doc := vary("researcher", {"roles": ["auditor"], "name": "bob"})
	allows(doc) with data.hospital.datasets["synthetic-cxr"].researchers as ["bob"]
}

test_purpose_not_approved_denied if refuses(vary("researcher", {"purposes": ["marketing"]}), "no registered purpose")

test_declared_purpose_must_be_registered if {
	refuses(vary("job", {"params": {"epochs": 1, "purpose": "demo"}}), "no registered purpose")
}

test_declared_purpose_approved_allowed if {
	doc := object.union(vary("job", {"params": {"epochs": 1, "purpose": "demo"}}), {"researcher": object.union(good.researcher, {"purposes": ["research", "demo"]})})
	allows(doc)
}

test_unreleased_field_denied if refuses(vary("job", {"fields": ["image", "patient_name"]}), "field 'patient_name'")

test_subset_of_fields_allowed if allows(vary("job", {"fields": ["image"]}))

test_missing_input_part_denied if refuses(object.union(good, {"researcher": null}), "lacks 'researcher'")

test_missing_dataset_metadata_denied if refuses(object.union(good, {"dataset": null}), "lacks 'dataset'")
