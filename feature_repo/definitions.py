"""Feast definitions of the example project, generated from its feature sets (the one
source of truth, declared in ``skewless.yaml``). ``feast apply`` picks up every Feast
object this module exports."""

from pathlib import Path

from pipelines.feast_objects import repo_objects
from pipelines.project import load_project

globals().update(repo_objects(load_project(Path(__file__).resolve().parent)))
