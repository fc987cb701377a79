# Benchmarks run through `make bench` (tests/bench/run.py), never under pytest.
collect_ignore_glob = ["*"]
