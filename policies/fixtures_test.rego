# Shared fixtures for the policy unit tests: one job every rule allows, and helpers
# that evaluate the decision on a variant of it.
package rapha_test

import rego.v1

good := {
	"job": {
		"dataset": "synthetic-cxr",
		"fields": ["image", "finding"],
		"budget": {"max_records": 100, "max_seconds": 600},
		"output_policy": {"max_weights_bytes": 1000000, "metric_names": ["loss"], "max_metric_points": 1000},
		"params": {"epochs": 3},
	},
	"scan": {"scanner_version": "rapha-scan/1", "findings": [], "counts": {"high": 0, "medium": 0, "low": 0}},
	"attestation": {"backend": "tdx", "outcome": "pass", "report_data_binding": "ok"},
	"airgap": {"sealed": true},
	"dataset": {
		"name": "synthetic-cxr", "fields": ["finding", "image"], "sensitivity": "synthetic",
		"cohort_size": 40, "max_records": 1000, "price": "0.01",
	},
	"researcher": {"name": "alice", "key_id": "00", "roles": ["researcher"], "purposes": ["research"]},
	"edge": {"demo": false, "unsafe": []},
}

# `with input as` is avoided on purpose: the engine handles `with` on input's parts.
decision_for(doc) := d if {
	d := data.rapha.decision with input.job as doc.job
		with input.scan as doc.scan
		with input.attestation as doc.attestation
		with input.airgap as doc.airgap
		with input.dataset as doc.dataset
		with input.researcher as doc.researcher
		with input.edge as doc.edge
}

# A variant of `good` with one part's fields replaced.
vary(part, changes) := object.union(good, {part: object.union(good[part], changes)})

# The decision refuses, with a reason that mentions `text`.
refuses(doc, text) if {
	d := decision_for(doc)
	d.allow == false
	some reason in d.deny
	contains(reason, text)
}

allows(doc) if {
	d := decision_for(doc)
	d.allow == true
	count(d.deny) == 0
}

test_good_job_allowed if allows(good)
