"""Chain-scale test data (`flask bench seed`) for the benchmarks in benchmarks/ and the query-count tests."""
