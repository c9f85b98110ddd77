"""Integration pages: the catalogue, connecting one by filling its form, testing and removing it."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.errors import ServiceError
from app.extensions import db
from app.htmx import hx_redirect
from app.integrations import service
from app.integrations.catalogue import CATALOGUE
from app.orgs.access import role_required
from app.orgs.service import current_org

bp = Blueprint("integrations", __name__, url_prefix="/integrations")


def _submitted(kind):
    """The form's values for the kind's settings; unchecked boxes are False, empty secrets are left out."""
    values = {}
    for setting in kind.settings:
        if setting.type == "boolean":
            values[setting.name] = request.form.get(setting.name) == "on"
        else:
            values[setting.name] = request.form.get(setting.name, "")
    return values


@bp.get("")
@login_required
@role_required("viewer")
def index():
    integrations = service.list_integrations(current_org().id)
    return render_template("integrations/index.html", integrations=integrations, catalogue=CATALOGUE)


@bp.route("/new/<kind_name>", methods=["GET", "POST"])
@login_required
@role_required("admin")
def new(kind_name):
    """Connect an integration of one kind by filling the form its settings schema gives."""
    kind = CATALOGUE.get(kind_name) or abort(404)
    errors = {}
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        try:
            integration = service.create_integration(
                current_org().id, current_user.id, name, kind.name, _submitted(kind)
            )
            db.session.commit()
        except ServiceError as error:
            db.session.rollback()
            errors = {item["field"]: item["message"] for item in (error.details or [])}
            flash(error.message, "error")
        else:
            flash(
                f"Connected {integration.name!r}. Its secrets are stored encrypted and are not shown again.", "success"
            )
            return redirect(url_for("integrations.index"))
    status = 422 if errors else 200
    return render_template(
        "integrations/form.html", kind=kind, integration=None, errors=errors, form=request.form
    ), status


@bp.route("/<int:integration_id>/edit", methods=["GET", "POST"])
@login_required
@role_required("admin")
def edit(integration_id):
    integration = service.get_integration(current_org().id, integration_id)
    kind = CATALOGUE[integration.kind]
    errors = {}
    if request.method == "POST":
        values = {key: value for key, value in _submitted(kind).items() if value != "" or not kind.setting(key).secret}
        try:
            service.update_integration(
                current_org().id, integration.id, values, name=request.form.get("name", "").strip()
            )
            db.session.commit()
        except ServiceError as error:
            db.session.rollback()
            errors = {item["field"]: item["message"] for item in (error.details or [])}
            flash(error.message, "error")
        else:
            flash(f"Saved {integration.name!r}.", "success")
            return redirect(url_for("integrations.index"))
    form = request.form if request.method == "POST" else {"name": integration.name, **integration.settings}
    status = 422 if errors else 200
    return render_template(
        "integrations/form.html", kind=kind, integration=integration, errors=errors, form=form
    ), status


@bp.post("/<int:integration_id>/test")
@login_required
@role_required("admin")
def test(integration_id):
    """Try the connection now and record the result on the integration."""
    integration = service.test_integration(current_org().id, integration_id)
    db.session.commit()
    category = "success" if integration.last_test_ok else "error"
    flash(f"Test of {integration.name!r}: {integration.last_test_message}", category)
    return hx_redirect(url_for("integrations.index"))


@bp.post("/<int:integration_id>/delete")
@login_required
@role_required("admin")
def delete(integration_id):
    service.delete_integration(current_org().id, integration_id)
    db.session.commit()
    flash("Removed the integration. Steps that name it will fail until one with that name exists.", "success")
    return hx_redirect(url_for("integrations.index"))
