"""JSON routes of the file manager."""

from flask import g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError, pydantic_details
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.extensions import db
from app.files import service
from app.files.http import file_response, receive_uploads
from app.orgs.access import role_required
from app.timeutil import isoformat


class FileOut(BaseModel):
    id: int
    name: str
    size: int
    content_type: str
    sha256: str
    folder_id: int | None
    source: str
    created_at: str
    updated_at: str
    deleted_at: str | None
    content_url: str


class FileResponse(BaseModel):
    data: FileOut


class FileListResponse(BaseModel):
    data: list[FileOut]
    next_cursor: str | None
    usage_bytes: int = Field(description="Bytes the organization stores, trash included.")


class UploadResponse(BaseModel):
    data: list[FileOut]


class FileUpdate(BaseModel):
    """Rename with `name`, move with `folder_id` (null for the top level); either or both."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    folder_id: int | None = None


def _file_out(stored):
    return FileOut(
        id=stored.id,
        name=stored.name,
        size=stored.size,
        content_type=stored.content_type,
        sha256=stored.sha256,
        folder_id=stored.folder_id,
        source=stored.source,
        created_at=isoformat(stored.created_at),
        updated_at=isoformat(stored.updated_at),
        deleted_at=isoformat(stored.deleted_at),
        content_url=url_for("api.file_content", file_id=stored.id),
    ).model_dump()


def _optional_int(name):
    raw = request.args.get(name) or request.form.get(name) or ""
    if not raw:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number, got {raw!r}.")
    return int(raw)


@bp.post("/files/upload")
@operation(
    "Upload one or more files (multipart/form-data, field 'file', optional 'folder_id')",
    response_model=UploadResponse,
    status=201,
    tag="files",
)
@api_auth_required
@role_required("member")
def upload_files():
    """Store each file of the form; the content type is detected from the bytes."""
    uploads, limit = receive_uploads()
    if not uploads:
        raise ApiError(400, "missing_file", "Send at least one file in the multipart field 'file'.")
    folder_id = _optional_int("folder_id")

    stored = [
        service.store_file(g.org_id, g.user.id, upload.filename, upload.stream, folder_id=folder_id, limit=limit)
        for upload in uploads
    ]
    db.session.commit()
    return jsonify({"data": [_file_out(item) for item in stored]}), 201


@bp.get("/files")
@operation(
    "List files, by id",
    response_model=FileListResponse,
    query=[
        ("limit", "integer", "Files per page, 1 to 500 (default 50)."),
        ("cursor", "string", "next_cursor of the previous page."),
        ("q", "string", "Only files whose name contains this text, in any folder."),
        ("folder_id", "integer", "Only files in this folder; without it, files in every folder."),
        ("trashed", "boolean", "List the trash instead."),
    ],
    tag="files",
)
@api_auth_required
@role_required("viewer")
def list_files():
    """The organization's files, oldest first, with the storage it uses."""
    limit = parse_limit()
    cursor = request.args.get("cursor")
    after_id = decode_cursor(cursor, 1)[0] if cursor else None
    if after_id is not None and not isinstance(after_id, int):
        raise ApiError(
            400, "invalid_cursor", "The cursor is invalid. Use the next_cursor of a previous page, unchanged."
        )
    folder_id = _optional_int("folder_id")
    trashed = request.args.get("trashed", "").lower() in ("1", "true", "yes")

    files = service.list_files_after(
        g.org_id,
        after_id,
        limit,
        folder_id=folder_id,
        search=(request.args.get("q") or "").strip() or None,
        trashed=trashed,
        any_folder=folder_id is None,
    )
    next_cursor = encode_cursor([files[limit - 1].id]) if len(files) > limit else None
    return jsonify(
        {
            "data": [_file_out(item) for item in files[:limit]],
            "next_cursor": next_cursor,
            "usage_bytes": service.storage_usage(g.org_id),
        }
    )


@bp.get("/files/<int:file_id>")
@operation("A file's metadata", response_model=FileResponse, tag="files")
@api_auth_required
@role_required("viewer")
def get_file(file_id):
    """Metadata of one file, in the trash or not."""
    return jsonify({"data": _file_out(service.get_file(g.org_id, file_id))})


@bp.get("/files/<int:file_id>/content")
@operation("Download a file's bytes (always as an attachment)", tag="files")
@api_auth_required
@role_required("viewer")
def file_content(file_id):
    """The file's bytes, as an attachment under its display name."""
    return file_response(service.get_file(g.org_id, file_id, trashed=False))


@bp.patch("/files/<int:file_id>")
@operation("Rename or move a file", request_model=FileUpdate, response_model=FileResponse, tag="files")
@api_auth_required
@role_required("member")
def update_file(file_id):
    """Rename the file, move it to another folder, or both."""
    try:
        update = FileUpdate.model_validate(request.get_json(silent=True) or {})
    except PydanticValidationError as error:
        raise ApiError(422, "validation_error", "The request body is invalid.", pydantic_details(error)) from None
    if not update.model_fields_set:
        raise ApiError(422, "validation_error", "Send 'name', 'folder_id' or both.")

    stored = service.get_file(g.org_id, file_id, trashed=False)
    if "name" in update.model_fields_set:
        service.rename_file(g.org_id, stored.id, update.name or "")
    if "folder_id" in update.model_fields_set:
        service.move_file(g.org_id, stored.id, update.folder_id)
    db.session.commit()
    return jsonify({"data": _file_out(stored)})


@bp.delete("/files/<int:file_id>")
@operation(
    "Move a file to the trash, or delete it for good with permanent=true",
    query=[("permanent", "boolean", "Delete the file and its bytes now instead of moving it to the trash.")],
    status=204,
    tag="files",
)
@api_auth_required
@role_required("member")
def delete_file(file_id):
    """Trash the file; with permanent=true delete it and its bytes."""
    if request.args.get("permanent", "").lower() in ("1", "true", "yes"):
        service.delete_file(g.org_id, service.get_file(g.org_id, file_id))
    else:
        service.trash_file(g.org_id, file_id)
    db.session.commit()
    return "", 204


@bp.post("/files/<int:file_id>/restore")
@operation("Take a file out of the trash", response_model=FileResponse, tag="files")
@api_auth_required
@role_required("member")
def restore_file(file_id):
    """Restore a trashed file."""
    stored = service.restore_file(g.org_id, file_id)
    db.session.commit()
    return jsonify({"data": _file_out(stored)})
