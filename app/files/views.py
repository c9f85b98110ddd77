"""The file manager pages: list, upload, folders, rename, move, trash, download."""

from flask import Blueprint, current_app, flash, jsonify, render_template, request, url_for
from flask_login import current_user, login_required

from app import wants_json
from app.errors import Conflict, ValidationError
from app.extensions import db
from app.files import service
from app.files.http import file_response, receive_uploads
from app.htmx import hx_redirect, is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org

bp = Blueprint("files", __name__)

PER_PAGE = 50


def _int_arg(source, name):
    raw = (source.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValidationError(f"{name} must be a whole number, got {raw!r}.", {name: "not a number"})
    return int(raw)


def _back(folder_id=None):
    return url_for("files.index", folder=folder_id) if folder_id else url_for("files.index")


def _form_failed(problem, location):
    """Flash why a form was rejected and send the user back to it; nothing was changed."""
    db.session.rollback()
    flash(problem.message, "error")
    return hx_redirect(location)


@bp.get("/files")
@login_required
@role_required("viewer")
def index():
    """A folder's files and subfolders, or the files whose names match a search."""
    org = current_org()
    folder_id = _int_arg(request.args, "folder")
    folder = service.get_folder(org.id, folder_id) if folder_id else None
    search = (request.args.get("q") or "").strip()
    sort = request.args.get("sort") or "name"
    order = request.args.get("order") or "asc"
    page = max(_int_arg(request.args, "page") or 1, 1)

    files, total = service.list_files(org.id, folder_id, search or None, sort, order, page=page, per_page=PER_PAGE)
    context = {
        "files": files,
        "total": total,
        "folder": folder,
        "folders": [] if search else service.list_folders(org.id, folder_id),
        "trail": service.breadcrumbs(folder) if folder else [],
        "search": search,
        "sort": sort,
        "order": order,
        "page": page,
        "pages": max((total + PER_PAGE - 1) // PER_PAGE, 1),
        "usage": service.storage_usage(org.id),
        "max_upload": current_app.config["FILE_MAX_UPLOAD_BYTES"],
    }
    if is_htmx():
        return render_template("files/_listing.html", **context)
    return render_template("files/index.html", **context)


@bp.post("/files/upload")
@login_required
@role_required("member")
def upload():
    """Store the uploaded files; the page's uploader sends one file a request and reads JSON."""
    org = current_org()
    uploads, limit = receive_uploads()
    folder_id = _int_arg(request.form, "folder_id")
    if not uploads:
        raise ValidationError("Choose at least one file to upload.", {"file": "missing"})

    stored = [
        service.store_file(org.id, current_user.id, item.filename, item.stream, folder_id=folder_id, limit=limit)
        for item in uploads
    ]
    db.session.commit()

    if wants_json():
        return jsonify({"data": [{"id": item.id, "name": item.name, "size": item.size} for item in stored]}), 201
    flash(f"Uploaded {len(stored)} file{'s' if len(stored) != 1 else ''}.", "success")
    return hx_redirect(_back(folder_id))


@bp.get("/files/<int:file_id>")
@login_required
@role_required("viewer")
def detail(file_id):
    """One file: its details, with forms to rename, move and delete it."""
    org = current_org()
    stored = service.get_file(org.id, file_id)
    return render_template("files/detail.html", file=stored, folder_choices=service.folder_paths(org.id))


@bp.post("/files/<int:file_id>/rename")
@login_required
@role_required("member")
def rename(file_id):
    """Rename a file; an invalid name is flashed on the file's page."""
    try:
        stored = service.rename_file(current_org().id, file_id, request.form.get("name", ""))
    except ValidationError as problem:
        return _form_failed(problem, url_for("files.detail", file_id=file_id))
    db.session.commit()
    flash(f"Renamed to {stored.name}.", "success")
    return hx_redirect(url_for("files.detail", file_id=file_id))


@bp.post("/files/<int:file_id>/move")
@login_required
@role_required("member")
def move(file_id):
    """Move a file to another folder, or to the top level."""
    stored = service.move_file(current_org().id, file_id, _int_arg(request.form, "folder_id"))
    db.session.commit()
    flash("Moved.", "success")
    return hx_redirect(_back(stored.folder_id))


@bp.post("/files/<int:file_id>/delete")
@login_required
@role_required("member")
def delete(file_id):
    """Move a file to the trash."""
    stored = service.trash_file(current_org().id, file_id)
    db.session.commit()
    flash(f"Moved {stored.name} to the trash.", "success")
    return hx_redirect(_back(stored.folder_id))


@bp.post("/files/<int:file_id>/restore")
@login_required
@role_required("member")
def restore(file_id):
    """Take a file out of the trash."""
    stored = service.restore_file(current_org().id, file_id)
    db.session.commit()
    flash(f"Restored {stored.name}.", "success")
    return hx_redirect(url_for("files.trash"))


@bp.get("/files/<int:file_id>/download")
@login_required
@role_required("viewer")
def download(file_id):
    """The file's bytes as an attachment."""
    return file_response(service.get_file(current_org().id, file_id, trashed=False))


@bp.get("/files/<int:file_id>/preview")
@login_required
@role_required("viewer")
def preview(file_id):
    """Images and PDFs inline; every other type still downloads as an attachment."""
    return file_response(service.get_file(current_org().id, file_id, trashed=False), inline=True)


@bp.get("/files/trash")
@login_required
@role_required("viewer")
def trash():
    """Files in the trash, newest first."""
    org = current_org()
    files, total = service.list_files(org.id, trashed=True, sort="created", order="desc", per_page=500)
    return render_template("files/trash.html", files=files, total=total)


@bp.post("/files/trash/empty")
@login_required
@role_required("member")
def empty_trash():
    """Delete every file in the trash for good."""
    count = service.empty_trash(current_org().id)
    db.session.commit()
    flash(f"Deleted {count} file{'s' if count != 1 else ''} for good.", "success")
    return hx_redirect(url_for("files.trash"))


@bp.post("/folders")
@login_required
@role_required("member")
def create_folder():
    """Create a folder in the current folder; an invalid or taken name is flashed on the listing."""
    parent_id = _int_arg(request.form, "parent_id")
    try:
        folder = service.create_folder(current_org().id, request.form.get("name", ""), parent_id)
    except (ValidationError, Conflict) as problem:
        return _form_failed(problem, _back(parent_id))
    db.session.commit()
    flash(f"Created the folder {folder.name}.", "success")
    return hx_redirect(_back(parent_id))


@bp.post("/folders/<int:folder_id>/delete")
@login_required
@role_required("member")
def delete_folder(folder_id):
    """Delete an empty folder; for a folder that is not empty the reason is flashed."""
    try:
        folder = service.delete_folder(current_org().id, folder_id)
    except Conflict as problem:
        return _form_failed(problem, _back(folder_id))
    db.session.commit()
    flash(f"Deleted the folder {folder.name}.", "success")
    return hx_redirect(_back(folder.parent_id))
