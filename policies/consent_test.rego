package rapha_test

import rego.v1

test_unknown_cohort_denied if refuses(vary("dataset", {"cohort_size": null}), "consented cohort size")

test_small_cohort_denied if refuses(vary("dataset", {"cohort_size": 24}), "only 24 consented records")

test_minimum_cohort_allowed if allows(vary("dataset", {"cohort_size": 25}))

test_minimum_is_hospital_data if {
	refuses(vary("dataset", {"cohort_size": 40}), "at least 50") with data.hospital.consent.min_cohort as 50
}
