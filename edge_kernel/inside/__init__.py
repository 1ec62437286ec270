"""The code that runs beside the researcher's, inside the sandbox: the job process and the
``rapha`` runtime. Untrusted company: it imports only the wire, the protocol, stdlib, numpy
and torch (tests/test_import_rules.py), and nothing host-side imports it; the runner names
it only as the module to run."""
