# Who may train on which dataset, in which role and for which purpose.
#
# The allowlists live in data.json under hospital.datasets, so the Caldicott Guardian
# and the DPO change them without touching these rules.
package rapha

import rego.v1

released := data.hospital.datasets[input.job.dataset]

# Control: Caldicott Principle 4 (access on a strict need-to-know basis);
# HIPAA 164.308(a)(4) (information access management).
deny contains sprintf("dataset '%s' is not released for training at this edge", [input.job.dataset]) if {
	not released
}

# Control: Caldicott Principle 4; HIPAA 164.308(a)(4)(ii)(B) (access authorisation).
deny contains sprintf("researcher '%s' has no role granted access to dataset '%s'", [input.researcher.name, input.job.dataset]) if {
	released
	not researcher_granted
}

researcher_granted if input.researcher.name in released.researchers

researcher_granted if {
	some role in input.researcher.roles
	role in released.roles
}

# Control: UK GDPR Art. 5(1)(b) (purpose limitation), read with Art. 5(1)(c).
deny contains sprintf("no registered purpose of this researcher is approved for dataset '%s'", [input.job.dataset]) if {
	released
	not purpose_approved
}

purpose_approved if {
	not input.job.params.purpose
	some purpose in input.researcher.purposes
	purpose in released.purposes
}

purpose_approved if {
	input.job.params.purpose in input.researcher.purposes
	input.job.params.purpose in released.purposes
}

# Control: UK GDPR Art. 5(1)(c) (data minimisation); Caldicott Principle 3 (minimum
# necessary); HIPAA 164.502(b) (minimum necessary).
deny contains sprintf("field '%s' of dataset '%s' is not released for training; ask only for %v", [name, input.job.dataset, released.fields]) if {
	released
	some name in input.job.fields
	not name in released.fields
}
