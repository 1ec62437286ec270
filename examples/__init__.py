"""The quickstart notebook and the demo, importable (``examples.make_quickstart``) so that tests and
benchmarks share the quickstart cell. A regular package: a namespace package here would lose to
any installed top-level ``examples`` package (Opacus 1.6 installs one)."""
