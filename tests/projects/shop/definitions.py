"""Feast objects of this project, for `feast apply` (skewless apply registers the same)."""

from pathlib import Path

from pipelines.feast_objects import repo_objects
from pipelines.project import load_project

globals().update(repo_objects(load_project(Path(__file__).resolve().parent)))
