"""Feast definitions of the repo, generated from ``feature_sets.py`` (the one source of
truth). ``feast apply`` picks up every Feast object this module exports."""

from pipelines.feast_objects import repo_objects

globals().update(repo_objects())
