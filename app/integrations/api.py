"""JSON routes for integrations. Secret settings are accepted but never returned."""

from typing import Any

from flask import g, jsonify, request, url_for
from pydantic import BaseModel, Field

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.extensions import db
from app.integrations import service
from app.integrations.catalogue import CATALOGUE
from app.orgs.access import role_required

TAG = "integrations"


class IntegrationCreate(BaseModel):
    name: str = Field(description="Steps refer to the integration by this name.")
    kind: str = Field(description="slack, http, smtp, github or s3; see /integrations/catalogue.")
    settings: dict[str, Any] = Field({}, description="Values for the kind's settings, secrets included.")


class IntegrationUpdate(BaseModel):
    name: str | None = None
    settings: dict[str, Any] = Field({}, description="Secrets left out or empty keep their stored values.")


class IntegrationOut(BaseModel):
    id: int
    name: str
    kind: str
    settings: dict[str, Any]
    secrets_set: list[str] = Field(description="Names of the secret settings that have a value.")
    last_tested_at: str | None
    last_test_ok: bool | None
    last_test_message: str | None
    created_at: str


class IntegrationList(BaseModel):
    data: list[IntegrationOut]


def _body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_json", "The request body must be a JSON object with Content-Type: application/json."
        )
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise ApiError(422, "validation_error", "settings must be a JSON object.")
    return body, settings


@bp.get("/integrations/catalogue")
@operation("The kinds of integration and their settings schemas", tag=TAG)
@api_auth_required
@role_required("viewer")
def integration_catalogue():
    return jsonify(
        {
            "data": [
                {"kind": kind.name, "label": kind.label, "description": kind.description, "schema": kind.json_schema()}
                for kind in CATALOGUE.values()
            ]
        }
    )


@bp.get("/integrations")
@operation("List integrations", response_model=IntegrationList, tag=TAG)
@api_auth_required
@role_required("viewer")
def list_integrations():
    return jsonify({"data": [service.public_view(item) for item in service.list_integrations(g.org_id)]})


@bp.post("/integrations")
@operation(
    "Connect an integration", request_model=IntegrationCreate, response_model=IntegrationOut, status=201, tag=TAG
)
@api_auth_required
@role_required("admin")
def create_integration():
    body, settings = _body()
    integration = service.create_integration(g.org_id, g.user.id, body.get("name"), body.get("kind"), settings)
    db.session.commit()
    response = jsonify(service.public_view(integration))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_integration", integration_id=integration.id)
    return response


@bp.get("/integrations/<int:integration_id>")
@operation("Get an integration (secrets are never returned)", response_model=IntegrationOut, tag=TAG)
@api_auth_required
@role_required("viewer")
def get_integration(integration_id):
    return jsonify(service.public_view(service.get_integration(g.org_id, integration_id)))


@bp.patch("/integrations/<int:integration_id>")
@operation("Change an integration", request_model=IntegrationUpdate, response_model=IntegrationOut, tag=TAG)
@api_auth_required
@role_required("admin")
def update_integration(integration_id):
    body, settings = _body()
    integration = service.update_integration(g.org_id, integration_id, settings, name=body.get("name"))
    db.session.commit()
    return jsonify(service.public_view(integration))


@bp.delete("/integrations/<int:integration_id>")
@operation("Delete an integration", status=204, tag=TAG)
@api_auth_required
@role_required("admin")
def delete_integration(integration_id):
    service.delete_integration(g.org_id, integration_id)
    db.session.commit()
    return "", 204


@bp.post("/integrations/<int:integration_id>/test")
@operation("Test the connection and record the result", response_model=IntegrationOut, tag=TAG)
@api_auth_required
@role_required("admin")
def test_integration(integration_id):
    integration = service.test_integration(g.org_id, integration_id)
    db.session.commit()
    return jsonify(service.public_view(integration))
