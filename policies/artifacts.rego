# What a job may bring in: safetensors artifacts (pretrained weights), bounded in size.
package rapha

import rego.v1

artifact_limits := data.hospital.artifacts

# Control: NHS DSPT 9 (IT protection) - what a researcher brings onto the appliance is
# bounded per job: each artifact and all of them together within the hospital's limit.
deny contains sprintf("artifact '%s' is %d bytes; this edge takes at most %d bytes of artifacts per job", [artifact.name, artifact.bytes, artifact_limits.max_artifact_bytes]) if {
	some artifact in object.get(input.job, "artifacts", [])
	artifact.bytes > artifact_limits.max_artifact_bytes
}

deny contains sprintf("the job's artifacts are %d bytes together; this edge takes at most %d bytes per job", [total, artifact_limits.max_artifact_bytes]) if {
	total := sum([a.bytes | some a in object.get(input.job, "artifacts", [])])
	total > artifact_limits.max_artifact_bytes
	every artifact in object.get(input.job, "artifacts", []) {
		artifact.bytes <= artifact_limits.max_artifact_bytes
	}
}

# Control: NHS DSPT 9 - a job that brings artifacts to an edge whose data sets no limit
# is refused rather than taken without one (fail closed).
deny contains "this edge sets no artifact limit (data.hospital.artifacts.max_artifact_bytes); it takes no artifacts" if {
	count(object.get(input.job, "artifacts", [])) > 0
	not is_number(object.get(object.get(data.hospital, "artifacts", {}), "max_artifact_bytes", null))
}
