"""Evaluation harness: a matrix of drafters x policies x benchmarks x temperatures, run resumably and reported
in the paper's table layout with plots."""
