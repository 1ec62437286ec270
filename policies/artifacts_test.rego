package rapha_test

import rego.v1

weights_in(size) := {"name": "backbone", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "bytes": size}

test_no_artifacts_allowed if {
	allows(good)
}

test_artifact_within_limit_allowed if {
	allows(vary("job", {"artifacts": [weights_in(1000)]})) with data.hospital.artifacts.max_artifact_bytes as 1000
}

test_artifact_over_limit_denied if {
	refuses(vary("job", {"artifacts": [weights_in(1001)]}), "at most 1000 bytes of artifacts") with data.hospital.artifacts.max_artifact_bytes as 1000
}

test_artifacts_over_limit_together_denied if {
	two := [weights_in(600), object.union(weights_in(600), {"name": "head"})]
	refuses(vary("job", {"artifacts": two}), "together") with data.hospital.artifacts.max_artifact_bytes as 1000
}

test_artifacts_without_a_limit_denied if {
	refuses(vary("job", {"artifacts": [weights_in(10)]}), "sets no artifact limit") with data.hospital.artifacts as {}
}
