"""Connecting, changing, testing and using integrations. Every query is scoped by organization."""

import json
import logging
import re
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound, ValidationError
from app.extensions import db
from app.integrations import connectors
from app.integrations.catalogue import CATALOGUE
from app.integrations.crypto import decrypt_secrets, encrypt_secrets
from app.integrations.models import Integration
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def list_integrations(org_id):
    return db.session.scalars(
        db.select(Integration).where(Integration.org_id == org_id).order_by(Integration.name, Integration.id)
    ).all()


def get_integration(org_id, integration_id):
    integration = db.session.scalar(
        db.select(Integration).where(Integration.org_id == org_id, Integration.id == integration_id)
    )
    if integration is None:
        raise NotFound(f"Integration {integration_id} was not found in this organization.")
    return integration


def find_by_name(org_id, name, kinds=None):
    """Return the organization's integration called `name` for a step, or raise NotFound."""
    integration = db.session.scalar(
        db.select(Integration).where(Integration.org_id == org_id, Integration.name == name)
    )
    if integration is None:
        raise NotFound(f"No integration named {name!r}; connect one under Integrations.")
    if kinds and integration.kind not in kinds:
        raise ValidationError(
            f"Integration {name!r} is a {integration.kind} integration; this step needs {' or '.join(kinds)}."
        )
    return integration


def _clean_value(setting, raw):
    """Convert a submitted value to the setting's type, or raise ValueError with the reason."""
    if setting.type == "integer":
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a whole number, got {raw!r}") from None
    if setting.type == "boolean":
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in ("1", "true", "yes", "on", "y")
    if setting.type == "headers":
        value = raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueError('must be a JSON object of header names and values, e.g. {"X-Token": "abc"}') from None
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise ValueError('must be a JSON object of header names and string values, e.g. {"X-Token": "abc"}')
        return value
    if not isinstance(raw, str):
        raise ValueError("must be text")
    value = raw.strip()
    if len(value) > 2000:
        raise ValueError("is longer than 2000 characters")
    if setting.type == "url" and value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http or https URL, got {value[:100]!r}")
    return value


def _split_values(kind, values, existing_secret_names=()):
    """Validate submitted values against the kind's schema and split them into settings and secrets.

    A secret left empty keeps its stored value, because pages never show secrets to edit.
    """
    problems = []
    settings, secrets = {}, {}
    unknown = sorted(set(values) - {setting.name for setting in kind.settings})
    for name in unknown:
        problems.append({"field": name, "message": f"is not a setting of {kind.label}"})
    for setting in kind.settings:
        raw = values.get(setting.name)
        if raw is None or raw == "":
            if setting.required and not (setting.secret and setting.name in existing_secret_names):
                problems.append({"field": setting.name, "message": f"{setting.label} is required"})
            elif setting.default is not None and not setting.secret:
                settings[setting.name] = setting.default
            continue
        try:
            value = _clean_value(setting, raw)
        except ValueError as error:
            problems.append({"field": setting.name, "message": f"{setting.label} {error}"})
            continue
        (secrets if setting.secret else settings)[setting.name] = value
    if problems:
        raise ValidationError(f"The {kind.label} settings are invalid: {problems[0]['message']}.", problems)
    return settings, secrets


def _check_name(name):
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(
            "The integration name is invalid; use up to 100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit.",
            [{"field": "name", "message": "use letters, digits, '_', '.' or '-'"}],
        )


def create_integration(org_id, user_id, name, kind_name, values):
    kind = CATALOGUE.get(kind_name)
    if kind is None:
        raise ValidationError(
            f"Unknown integration kind {kind_name!r}; use one of {', '.join(CATALOGUE)}.",
            [{"field": "kind", "message": f"use one of {', '.join(CATALOGUE)}"}],
        )
    _check_name(name)
    settings, secrets = _split_values(kind, values or {})
    integration = Integration(
        org_id=org_id,
        name=name,
        kind=kind.name,
        settings=settings,
        secrets_token=encrypt_secrets(secrets) if secrets else "",
        secret_names=sorted(secrets),
        created_by_id=user_id,
    )
    _flush_unique(integration, name)
    logger.info("integration created org=%s integration=%s kind=%s", org_id, integration.id, kind.name)
    return integration


def _flush_unique(integration, name):
    try:
        with db.session.begin_nested():
            db.session.add(integration)
            db.session.flush()
    except IntegrityError:
        raise Conflict(
            f"An integration named {name!r} already exists; choose another name.",
            [{"field": "name", "message": "already in use"}],
        ) from None


def update_integration(org_id, integration_id, values, name=None):
    """Change settings; secrets left empty keep their values, others replace them."""
    integration = get_integration(org_id, integration_id)
    kind = CATALOGUE[integration.kind]
    # Settings left out keep their values, so a change may send only what changes.
    settings, secrets = _split_values(kind, {**integration.settings, **(values or {})}, integration.secret_names)
    if name is not None and name != integration.name:
        _check_name(name)
        integration.name = name
    merged = {**decrypt_secrets(integration.secrets_token), **secrets}
    integration.settings = settings
    integration.secrets_token = encrypt_secrets(merged) if merged else ""
    integration.secret_names = sorted(merged)
    integration.updated_at = utcnow()
    _flush_unique(integration, integration.name)
    logger.info("integration updated org=%s integration=%s", org_id, integration.id)
    return integration


def delete_integration(org_id, integration_id):
    integration = get_integration(org_id, integration_id)
    db.session.delete(integration)
    logger.info("integration deleted org=%s integration=%s", org_id, integration_id)


def resolved_settings(integration):
    """Settings and decrypted secrets together, for the code that uses the integration."""
    return {**integration.settings, **decrypt_secrets(integration.secrets_token)}


def test_integration(org_id, integration_id):
    """Try the connection, store the outcome on the integration and return it."""
    integration = get_integration(org_id, integration_id)
    ok, message = connectors.test_connection(integration.kind, resolved_settings(integration))
    integration.last_tested_at = utcnow()
    integration.last_test_ok = ok
    integration.last_test_message = message[:500]
    logger.info("integration tested org=%s integration=%s ok=%s", org_id, integration.id, ok)
    return integration


def public_view(integration):
    """The integration as pages and the API show it: settings, and only the names of secrets set."""
    from app.timeutil import isoformat

    return {
        "id": integration.id,
        "name": integration.name,
        "kind": integration.kind,
        "settings": integration.settings,
        "secrets_set": list(integration.secret_names),
        "last_tested_at": isoformat(integration.last_tested_at),
        "last_test_ok": integration.last_test_ok,
        "last_test_message": integration.last_test_message,
        "created_at": isoformat(integration.created_at),
    }


def rotate_all_secrets():
    """Re-encrypt every stored secret with the first key of SECRET_ENCRYPTION_KEYS; returns the count."""
    from app.integrations.crypto import rotate_token

    count = 0
    for integration in db.session.scalars(db.select(Integration).where(Integration.secrets_token != "")):
        integration.secrets_token = rotate_token(integration.secrets_token)
        count += 1
    return count
