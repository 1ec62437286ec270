# Attestation: the edge proves, per job, which code runs on which hardware.
package rapha

import rego.v1

# Control: HIPAA 164.312(c)(1) (integrity) and 164.312(d); NHS DSPT 9 - a verified
# attestation bound to this job is required before code runs.
deny contains "no verified attestation for this job" if {
	not attested
}

# The attestation gate's evidence: its outcome and whether the quote binds this job.
attested if {
	input.attestation.outcome in {"pass", "unsafe"}
	input.attestation.report_data_binding == "ok"
}

# Control: HIPAA 164.312(c)(1); NHS DSPT 9 - only hardware TEE backends are accepted.
# The software stand-in proves nothing about isolation and is allowed on a demo edge only.
deny contains sprintf("attestation backend '%s' is not accepted by this edge", [input.attestation.backend]) if {
	attested
	not backend_accepted
}

backend_accepted if input.attestation.backend in data.hospital.attestation.backends

backend_accepted if {
	input.edge.demo == true
	input.attestation.backend in data.hospital.attestation.demo_backends
}
