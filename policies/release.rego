# The release decision on a finished job's held outputs (S5): release, review or refuse.
#
# Input: {"dataset": name, "checks": {"record_copies", "membership", "capacity"},
# "holdback_size"}, the disclosure checks' figures as the edge's check process wrote them.
# Output: data.rapha.release.decision = {"decision", "rule", "reasons", "mode",
# "approvals_needed"}. The edge refuses on anything else: an undefined decision, an
# unknown value, an error (fail closed, S4).
package rapha.release

import rego.v1

settings := data.hospital.release

dataset_settings := object.get(settings.datasets, input.dataset, {})

# A dataset's own thresholds replace the edge's, one by one.
thresholds := object.union(settings.thresholds, object.get(dataset_settings, "thresholds", {}))

# Per dataset: "auto" (checks under thresholds release at once), "review" (one output
# checker) or "two_person" (two different checkers); a dataset not listed gets the default.
mode := object.get(dataset_settings, "mode", settings.default_mode)

approvals_for_mode := {"auto": 0, "review": 1, "two_person": 2}

copies := input.checks.record_copies

membership := input.checks.membership

capacity := input.checks.capacity

# Control: NHS DSPT 9 (IT protection), S4 - every check must have answered.
refusals contains {"rule": "checks_incomplete", "reason": sprintf("the '%s' check gave no result", [name])} if {
	some name in ["record_copies", "membership", "capacity"]
	not is_object(input.checks[name])
}

# Control: S4 - a mode the edge does not know is not a mode to release under.
refusals contains {"rule": "unknown_mode", "reason": sprintf("release mode '%v' is not one of auto, review, two_person", [mode])} if {
	not mode in object.keys(approvals_for_mode)
}

# Control: UK GDPR Art. 5(1)(f), Caldicott Principle 1; SATRE 3.3.07 (ML outputs) - a
# record of the job's found in any released number (weights, metrics, their names and
# shapes), verbatim or transformed, is patient data leaving: refused, never reviewed.
refusals contains {"rule": "record_copies", "reason": sprintf("%d of the records the job used were found copied in its outputs", [copies.records_matched])} if {
	copies.records_matched > thresholds.max_records_matched
}

refusals contains {"rule": "record_copies_unchecked", "reason": "the outputs could not be searched for copies of the records used"} if {
	is_object(copies)
	not is_number(copies.records_matched)
}

# Control: UK GDPR Art. 5(1)(f); ICO AI guidance (model inversion and membership
# inference) - a model whose loss tells the records it was trained on from held-back ones
# discloses who is in the cohort. Over the threshold: refused, or held for review where
# the hospital chose "review".
membership_over if {
	membership.status == "checked"
	membership.auc > thresholds.max_mia_auc
}

refusals contains {"rule": "membership_inference", "reason": sprintf("a membership inference attack told used from held-back records (AUC %.2f, limit %.2f)", [membership.auc, thresholds.max_mia_auc])} if {
	membership_over
	thresholds.mia_over_threshold == "refuse"
}

reviews contains {"rule": "membership_inference_review", "reason": sprintf("membership inference AUC %.2f is over %.2f: an output checker decides", [membership.auc, thresholds.max_mia_auc])} if {
	membership_over
	thresholds.mia_over_threshold == "review"
}

# A model the edge could not export and evaluate: the hospital's choice, review by default.
reviews contains {"rule": "membership_not_checkable", "reason": "the model could not be checked for membership inference: an output checker decides"} if {
	membership.status == "not_checkable"
	object.get(thresholds, "not_checkable", "review") == "review"
}

refusals contains {"rule": "membership_not_checkable", "reason": "the model could not be checked for membership inference"} if {
	membership.status == "not_checkable"
	object.get(thresholds, "not_checkable", "review") == "refuse"
}

# Where the hospital lets a model that could not be checked go (the demo's synthetic
# dataset, whose records are no one's), the release says so: its rule and reason are
# in the receipt, never "checks under thresholds".
notes contains {"rule": "membership_not_checkable_allowed", "reason": "the model could not be checked for membership inference; the policy releases it unchecked"} if {
	membership.status == "not_checkable"
	object.get(thresholds, "not_checkable", "review") == "release"
}

refusals contains {"rule": "membership_not_checkable", "reason": sprintf("not_checkable is '%v'; it must be review, refuse or release", [thresholds.not_checkable])} if {
	membership.status == "not_checkable"
	not object.get(thresholds, "not_checkable", "review") in {"review", "refuse", "release"}
}

refusals contains {"rule": "membership_unchecked", "reason": "the membership inference check gave no usable answer"} if {
	is_object(membership)
	not membership.status in {"checked", "not_checkable"}
}

# Control: Five Safes (safe outputs) - many parameters per record can memorise records;
# a hospital may set a ceiling above which an output checker looks.
reviews contains {"rule": "capacity", "reason": sprintf("%.0f parameters per record used is over %.0f: an output checker decides", [capacity.parameters_per_record, thresholds.review_parameters_per_record])} if {
	is_number(thresholds.review_parameters_per_record)
	capacity.parameters_per_record > thresholds.review_parameters_per_record
}

# Control: Five Safes (safe outputs), SACRO / OpenSAFELY airlock practice - the dataset's
# release mode asks for output checkers.
reviews contains {"rule": sprintf("mode_%s", [mode]), "reason": sprintf("the dataset's release mode is %s: output checkers decide", [mode])} if {
	approvals_for_mode[mode] > 0
}

refusal_rules := sort([r.rule | some r in refusals])

review_rules := sort([r.rule | some r in reviews])

decision := {"decision": "refuse", "rule": refusal_rules[0], "reasons": sort([r.reason | some r in refusals]), "mode": mode, "approvals_needed": 0} if {
	count(refusals) > 0
}

decision := {"decision": "review", "rule": review_rules[0], "reasons": sort([r.reason | some r in reviews]), "mode": mode, "approvals_needed": max([1, approvals_for_mode[mode]])} if {
	count(refusals) == 0
	count(reviews) > 0
}

decision := {"decision": "release", "rule": "checks_under_thresholds", "reasons": [], "mode": mode, "approvals_needed": 0} if {
	count(refusals) == 0
	count(reviews) == 0
	count(notes) == 0
}

decision := {"decision": "release", "rule": sort([r.rule | some r in notes])[0], "reasons": sort([r.reason | some r in notes]), "mode": mode, "approvals_needed": 0} if {
	count(refusals) == 0
	count(reviews) == 0
	count(notes) > 0
}
