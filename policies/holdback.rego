# Records held back from every job for the membership-inference check on its outputs.
package rapha

import rego.v1

# Control: UK GDPR Art. 25 and Art. 32; SATRE 3.3.07 (a technical control on ML outputs) -
# the broker holds back `fraction` of the cohort, at least `minimum` records, which the
# job never sees, so that the model's loss on them can be compared with its loss on the
# records it trained on before anything is released. A dataset may set its own.
obligations["holdback"] := data.hospital.datasets[input.dataset.name].holdback

obligations["holdback"] := data.hospital.disclosure.holdback if {
	not data.hospital.datasets[input.dataset.name].holdback
}
