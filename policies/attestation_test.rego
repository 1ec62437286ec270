package rapha_test

import rego.v1

test_missing_attestation_denied if refuses(object.union(good, {"attestation": null}), "no verified attestation")

test_denied_attestation_denied if refuses(vary("attestation", {"outcome": "deny"}), "no verified attestation")

test_unbound_quote_denied if refuses(vary("attestation", {"report_data_binding": "mismatch"}), "no verified attestation")

test_sgx_allowed if allows(vary("attestation", {"backend": "sgx"}))

test_software_backend_refused_in_production if {
	refuses(vary("attestation", {"backend": "unsafe_software", "outcome": "unsafe"}), "backend 'unsafe_software' is not accepted")
}

test_software_backend_allowed_on_demo_edge if {
	allows(object.union(vary("attestation", {"backend": "unsafe_software", "outcome": "unsafe"}), {"edge": {"demo": true, "unsafe": []}}))
}

test_unknown_backend_refused_even_on_demo if {
	refuses(object.union(vary("attestation", {"backend": "homebrew"}), {"edge": {"demo": true, "unsafe": []}}), "not accepted")
}
