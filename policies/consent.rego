# Consent: opt-outs are honoured before anyone counts, and small cohorts are refused.
package rapha

import rego.v1

# Control: UK GDPR Art. 21 and the NHS national data opt-out; Caldicott Principle 7 -
# the cohort size must be the count after consent filtering, reported by the broker.
deny contains "the consented cohort size for this dataset is not known; the edge cannot check consent" if {
	not is_number(input.dataset.cohort_size)
}

# Control: UK GDPR Art. 5(1)(c); Caldicott Principle 4 - a model trained on a handful of
# patients can reveal them, so a minimum cohort applies after opt-outs.
deny contains sprintf("only %d consented records are available; at least %d are required", [input.dataset.cohort_size, data.hospital.consent.min_cohort]) if {
	is_number(input.dataset.cohort_size)
	input.dataset.cohort_size < data.hospital.consent.min_cohort
}
