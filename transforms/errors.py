"""The one error hierarchy of skewless: every expected failure is a ``SkewlessError``."""

from __future__ import annotations


class SkewlessError(Exception):
    """Root of every error skewless raises on purpose (bad input, missing service, ...)."""


class TransformError(SkewlessError):
    """A transform was given, or produced, values that break its declaration; ``field``
    names the input column when one is to blame (the server's 422 body reports it)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaError(SkewlessError):
    """Columns or types differ from what a feature set or a file declares."""


class ArtifactError(SkewlessError):
    """A statistics artifact is missing, corrupt, or does not match the feature set."""


class ConfigError(SkewlessError):
    """A project, a Feast repo or an option is not usable as given (feature_store.yaml,
    skewless.yaml, a command-line option, a time window)."""


class StoreError(SkewlessError):
    """A store (Redis, the Parquet offline store) answered with an error or holds data
    that breaks a guarantee (writes rejected, entities lost)."""


class StoreUnavailable(StoreError):
    """An online or offline store (Redis, Parquet files) cannot be reached."""


class RequestError(SkewlessError):
    """A lookup request is malformed; ``field`` names the offending part."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
