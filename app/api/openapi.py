"""The OpenAPI document, generated from the pydantic models that validate requests.

API views declare themselves with `@operation(...)`; the document at /api/v1/openapi.json is built
from those declarations and the models' JSON Schemas, so it cannot drift from the validation.
"""

import re

from flask import current_app, jsonify

from app.api import bp


def operation(summary, *, request_model=None, response_model=None, query=None, status=200, tag=None, public=False):
    """Describe an API view for the OpenAPI document.

    `query` is a list of (name, JSON Schema type, description) for query parameters.
    """

    def decorator(view):
        view.openapi = {
            "summary": summary,
            "request_model": request_model,
            "response_model": response_model,
            "query": query or [],
            "status": status,
            "tag": tag,
            "public": public,
        }
        return view

    return decorator


def _schema_ref(model, components):
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


_RULE_ARGUMENT = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def build_document(app):
    components = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {},
                    },
                    "required": ["code", "message"],
                }
            },
        }
    }
    paths = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        spec = getattr(view, "openapi", None)
        if spec is None:
            continue
        path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _describe(spec, rule, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Floyo API",
            "version": "1",
            "description": (
                "Usage events in, patterns and suggestions out. Authenticate with 'Authorization: Bearer KEY'."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerKey": []}],
        "paths": paths,
    }


def _describe(spec, rule, components):
    described = {
        "summary": spec["summary"],
        "operationId": rule.endpoint.replace(".", "_"),
        "parameters": [],
        "responses": {},
    }
    if spec["tag"]:
        described["tags"] = [spec["tag"]]
    if spec["public"]:
        described["security"] = []
    for argument in rule.arguments:
        converter = rule._converters[argument]
        kind = "integer" if type(converter).__name__ == "IntegerConverter" else "string"
        described["parameters"].append({"name": argument, "in": "path", "required": True, "schema": {"type": kind}})
    for name, kind, description in spec["query"]:
        described["parameters"].append(
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}
        )
    if spec["request_model"] is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema_ref(spec["request_model"], components)}},
        }
    success = {"description": "Success"}
    if spec["response_model"] is not None:
        success["content"] = {"application/json": {"schema": _schema_ref(spec["response_model"], components)}}
    described["responses"][str(spec["status"])] = success
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status in ("400", "401", "404", "422"):
        described["responses"][status] = error
    return described


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document of this API."""
    return jsonify(build_document(current_app))
