"""Measuring skew: training statistics, online/offline consistency, drift and attribution.

* :mod:`pipelines.skew.statistics` - per-feature statistics of a training set
  (``<training_set>.stats.json``), in Python, Spark or Beam via the analyzer combiner;
* :mod:`pipelines.skew.consistency` - logged vectors recomputed offline, compared bitwise;
* :mod:`pipelines.skew.attribution` - one cause per mismatch;
* :mod:`pipelines.skew.drift` - JSD / L-infinity / schema checks vs training statistics,
  thresholds overridable with ``SKEW_THRESHOLDS`` in the feature-set module;
* :mod:`pipelines.skew.report` - ``report.html`` + ``report.json`` (``skewless skew-report``).
"""
