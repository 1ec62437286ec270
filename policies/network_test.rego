package rapha_test

import rego.v1

high_finding := {"rule": "net-import", "line": 3, "col": 0, "severity": "high", "message": "imports network module socket"}

allowlist_finding := {"rule": "module-not-allowed", "line": 2, "col": 0, "severity": "medium", "message": "module pandas is not on the edge's allowlist"}

medium_finding := {"rule": "obfuscation", "line": 4, "col": 0, "severity": "medium", "message": "computed attribute name"}

test_missing_airgap_denied if refuses(object.union(good, {"airgap": null}), "no air-gap evidence")

test_unsealed_airgap_denied if refuses(object.union(good, {"airgap": {"sealed": false}}), "no air-gap evidence")

test_airgap_waived_on_demo_edge_with_unsafe_flag if {
	allows(object.union(good, {"airgap": null, "edge": {"demo": true, "unsafe": ["unsafe_no_airgap"]}}))
}

test_airgap_not_waived_without_demo if {
	refuses(object.union(good, {"airgap": null, "edge": {"demo": false, "unsafe": ["unsafe_no_airgap"]}}), "no air-gap evidence")
}

test_airgap_not_waived_on_demo_without_flag if {
	refuses(object.union(good, {"airgap": null, "edge": {"demo": true, "unsafe": []}}), "no air-gap evidence")
}

test_high_scan_finding_denied if {
	refuses(vary("scan", {"findings": [high_finding]}), "cell line 3: imports network module socket")
}

test_medium_scan_finding_allowed if allows(vary("scan", {"findings": [medium_finding]}))

test_allowlist_finding_denied_by_data if {
	refuses(vary("scan", {"findings": [allowlist_finding]}), "cell line 2: module pandas")
}

test_allowlist_finding_allowed_when_hospital_relaxes if {
	allows(vary("scan", {"findings": [allowlist_finding]})) with data.hospital.network.deny_scan_rules as []
}

test_unknown_scanner_denied if refuses(vary("scan", {"scanner_version": "other/9"}), "no scan report")

test_missing_scan_denied if refuses(object.union(good, {"scan": null}), "no scan report")

distributed := object.union(good, {"job": object.union(good.job, {"processes": 2})})

test_distributed_job_needs_evidence_of_its_filter if {
	refuses(object.union(distributed, {"airgap": {"sealed": true, "socket_filter": "unix-only"}}), "not of the filter it runs under")
}

test_distributed_job_allowed_with_evidence_of_its_filter if {
	allows(object.union(distributed, {"airgap": {"sealed": true, "socket_filter": "inet-loopback"}}))
}
