package rapha_test

import rego.v1

test_other_output_channel_denied if {
	refuses(vary("job", {"output_policy": object.union(good.job.output_policy, {"predictions": true})}), "weights and metrics only")
}

test_weights_over_cap_denied if {
	refuses(vary("job", {"output_policy": object.union(good.job.output_policy, {"max_weights_bytes": 268435457})}), "releases at most")
}

test_weights_at_cap_allowed if {
	allows(vary("job", {"output_policy": object.union(good.job.output_policy, {"max_weights_bytes": 268435456})}))
}

test_undeclared_metrics_denied if {
	refuses(vary("job", {"output_policy": object.union(good.job.output_policy, {"metric_names": []})}), "declare the metric names") with data.hospital.output.require_declared_metrics as true
}

test_undeclared_metrics_allowed_when_not_required if {
	doc := vary("job", {"output_policy": object.union(good.job.output_policy, {"metric_names": []})})
	allows(doc) with data.hospital.output.require_declared_metrics as false
}

test_too_many_metric_names_denied if {
	refuses(vary("job", {"output_policy": object.union(good.job.output_policy, {"metric_names": ["a", "b", "c"]})}), "metric names declared") with data.hospital.output.max_metric_names as 2
}

test_too_many_metric_points_denied if {
	refuses(vary("job", {"output_policy": object.union(good.job.output_policy, {"max_metric_points": 100001})}), "metric points requested")
}
