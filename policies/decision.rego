# The edge's decision on one job: allowed only when no rule in package rapha denies.
#
# Every other file in this directory adds reasons to `deny` and, where it grants the
# job something, limits to `obligations`. A rule that errs or is missing can only make
# the decision undefined, which the edge treats as a refusal (fail closed).
package rapha

import rego.v1

default allow := false

# Allowed only when the input is complete and nothing objects.
allow if {
	count(deny) == 0
}

decision := {"allow": allow, "deny": deny, "obligations": obligations}

# Control: NHS DSPT 9 (IT protection) - an incomplete request is not reviewed, it is refused.
deny contains sprintf("the policy input lacks '%s'; the edge cannot judge the job", [part]) if {
	some part in ["job", "scan", "dataset", "researcher", "edge"]
	not is_object(input[part])
}
