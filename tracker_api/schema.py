"""OpenAPI descriptions of tracker's authentication, for drf-spectacular (loaded in apps.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "tracker_api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <key>`; create a key with `tracker token`.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "tracker_api.authentication.SessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer: a sentence, a code, and per-field messages for bad input.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": True},
        "report": {"description": "Row-by-row reasons of a rejected import."},
    },
    "required": ["detail", "code"],
    "additionalProperties": True,
}

ERRORS = {
    "400": "Invalid input; `fields` names each bad field.",
    "401": "No or bad credentials.",
    "403": "Your role in the project is too low (or staff only).",
    "404": "No such object in the projects you are a member of.",
    "405": "Method not allowed.",
    "406": "Cannot produce the requested content type.",
    "409": "The stored state does not allow this change.",
    "413": "The request body is larger than this endpoint accepts.",
    "415": "Unsupported request content type.",
    "503": "The database or storage is unavailable right now; retry later.",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the shared error body on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    # A path parameter that is itself a path (artifact names) is documented without the
    # router's trailing slash, which would otherwise read as part of the name.
    paths = result.get("paths", {})
    for path in [p for p in paths if p.endswith("{name}/")]:
        paths[path[:-1]] = paths.pop(path)
    ref = {"$ref": "#/components/schemas/Error"}
    for path, ops in result.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for code, text in ERRORS.items():
                op["responses"].setdefault(code, {"description": text, "content": {"application/json": {"schema": ref}}})
    return result
