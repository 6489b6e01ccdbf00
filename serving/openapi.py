"""The OpenAPI 3.1 document of the lookup endpoints."""

from __future__ import annotations

from typing import Any

from serving.catalog import Catalog


def openapi_spec(catalog: Catalog, description: str | None) -> dict[str, Any]:
    """A small OpenAPI 3.1 document of the endpoints (services listed in the enum)."""
    err = {"$ref": "#/components/schemas/Error"}
    services = sorted(catalog.manifest.services)

    def resp(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": schema}}}

    errors = {
        str(c): resp(d, err)
        for c, d in [
            (400, "bad request"),
            (401, "unauthorized"),
            (
                404,
                "unknown feature view, feature service, push source or path; missing request data",
            ),
            (413, "too large"),
            (422, "not a JSON object of this schema, or a transform rejected its inputs"),
            (503, "Redis unavailable"),
        ]
    }
    body = {
        "type": "object",
        "properties": {
            "entities": {"type": "object", "additionalProperties": {"type": "array"}},
            "features": {"type": "array", "items": {"type": "string"}},
            "feature_service": {"type": "string", "enum": services},
            "full_feature_names": {"type": "boolean", "default": False},
            "request_time": {
                "type": ["integer", "string"],
                "description": "window features as of this time: epoch microseconds or "
                "ISO-8601 with a zone (default: now); a skewless extension",
            },
        },
        "required": ["entities"],
    }
    push = {
        "type": "object",
        "properties": {
            "push_source_name": {"type": "string", "enum": sorted(catalog.windows)},
            "df": {"type": "object", "additionalProperties": {"type": "array"}},
            "to": {"type": "string", "enum": ["online"], "default": "online"},
        },
        "required": ["push_source_name", "df"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "skewless online lookup", "version": "1", "description": description},
        "paths": {
            "/get-online-features": {
                "post": {
                    "summary": "Feast-compatible online features",
                    "requestBody": {"content": {"application/json": {"schema": body}}},
                    "responses": {"200": resp("feature vectors", {"type": "object"}), **errors},
                }
            },
            "/v1/features/{feature_service}": {
                "post": {
                    "summary": "Compact feature vectors of one feature service",
                    "parameters": [
                        {
                            "name": "feature_service",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": services},
                        }
                    ],
                    "requestBody": {"content": {"application/json": {"schema": body}}},
                    "responses": {"200": resp("features", {"type": "object"}), **errors},
                }
            },
            "/push": {
                "post": {
                    "summary": "Feast-compatible push of events to a window set's online state",
                    "requestBody": {"content": {"application/json": {"schema": push}}},
                    "responses": {"200": resp("events written", {"type": "object"}), **errors},
                }
            },
            "/health": {"get": {"responses": {"200": {"description": "alive"}}}},
            "/ready": {
                "get": {
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "no Redis"},
                    }
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                    },
                }
            }
        },
    }
