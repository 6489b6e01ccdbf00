"""Throwaway Feast repos built by the benchmarks and tests: a serving repo and a driver-stats
repo for the materializer. Not part of the product."""
