"""The scripts in benchmarks/."""
