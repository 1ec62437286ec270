# What may leave the edge: weights and declared metrics, within size limits (S5).
package rapha

import rego.v1

output_limits := data.hospital.output

# The output policy keys a job may set; any other key would ask for another channel out.
weights_only_keys := {"max_weights_bytes", "metric_names", "max_metric_points"}

# Control: UK GDPR Art. 5(1)(c) and 5(1)(f); NHS DSPT 1 (personal confidential data)
# - only weights and metrics leave, never records, predictions or files.
deny contains sprintf("output '%s' is not releasable; this edge releases weights and metrics only", [key]) if {
	some key, _ in input.job.output_policy
	not key in weights_only_keys
}

# Control: HIPAA 164.312(e)(1) (transmission security) - a size cap bounds how much a
# model can memorise and carry out.
deny contains sprintf("weights of up to %d bytes were requested; this edge releases at most %d", [input.job.output_policy.max_weights_bytes, output_limits.max_weights_bytes]) if {
	input.job.output_policy.max_weights_bytes > output_limits.max_weights_bytes
}

# Control: UK GDPR Art. 5(1)(c) - metrics are released only under names declared up front
# (the release check refuses any metric not declared; a job that declares none releases
# none). A hospital that wants every job to report metrics sets require_declared_metrics.
deny contains "declare the metric names the job will log (output_policy.metric_names)" if {
	output_limits.require_declared_metrics
	count(object.get(input.job.output_policy, "metric_names", [])) == 0
}

# Control: UK GDPR Art. 5(1)(c) - bounded metric names and points.
deny contains sprintf("%d metric names declared; at most %d are released", [count(input.job.output_policy.metric_names), output_limits.max_metric_names]) if {
	count(input.job.output_policy.metric_names) > output_limits.max_metric_names
}

deny contains sprintf("%d metric points requested; at most %d are released", [input.job.output_policy.max_metric_points, output_limits.max_metric_points]) if {
	input.job.output_policy.max_metric_points > output_limits.max_metric_points
}
