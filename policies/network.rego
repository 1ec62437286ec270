# Sealing: the job must run air-gapped, and code the scanner flags does not run.
package rapha

import rego.v1

# Control: NHS DSPT 9.5 (network protection); HIPAA 164.312(e)(1) (transmission
# security) - evidence of the air-gap is required before clinical data is touched.
deny contains "no air-gap evidence for this job; the edge must run it sealed from the network" if {
	not airgap_sealed
	not airgap_waived
}

airgap_sealed if input.airgap.sealed == true

# Only a demo edge, with the weakening named in its settings, may run without the
# air-gap; the receipt records it.
airgap_waived if {
	input.edge.demo == true
	"unsafe_no_airgap" in input.edge.unsafe
}

# Control: NHS DSPT 9.5 - a job of several processes runs under the seccomp variant that
# allows TCP on its own loopback (its ranks' rendezvous); the air-gap evidence must have
# been taken under that very variant, and still show every way out blocked.
deny contains "the job has several processes but the air-gap evidence is not of the filter it runs under" if {
	input.job.processes > 1
	airgap_sealed
	input.airgap.socket_filter != "inet-loopback"
}

# Control: HIPAA 164.308(a)(1)(ii)(A) (risk analysis); NHS DSPT 9 - any high-severity
# scanner finding denies. The scan is defence in depth; the sandbox is the guarantee.
deny contains sprintf("%s: %s", [place(finding), finding.message]) if {
	some finding in input.scan.findings
	finding.severity == "high"
}

# Where a finding is: the cell, or a file the job includes (its path).
place(finding) := sprintf("%s line %d", [finding.file, finding.line]) if {
	is_string(finding.file)
} else := sprintf("cell line %d", [finding.line])

# Control: NHS DSPT 9 - the hospital may refuse further scanner rules at any severity
# (by default: modules outside the edge's runtime allowlist).
deny contains sprintf("%s: %s", [place(finding), finding.message]) if {
	some finding in input.scan.findings
	finding.rule in data.hospital.network.deny_scan_rules
}

# Control: NHS DSPT 9 - a scan report that is missing or from an unknown scanner is no scan.
deny contains "the job has no scan report from a known scanner" if {
	not startswith(input.scan.scanner_version, "rapha-scan/")
}
