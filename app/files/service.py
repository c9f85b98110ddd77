"""The file manager: storing uploads under generated keys, folders, rename, move, trash, usage."""

import hashlib
import logging
import re

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.billing.limits import check_storage
from app.errors import Conflict, NotFound, ServiceError, ValidationError
from app.extensions import db
from app.files.models import File, Folder
from app.files.sniff import SNIFF_BYTES, sniff
from app.files.storage import get_storage, new_key
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

NAME_MAX_LENGTH = 255
SORTS = {"name": File.name, "size": File.size, "created": File.created_at, "type": File.content_type}
EXPORTS_FOLDER = "Exports"
WORKFLOWS_FOLDER = "Workflows"


class FileTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


def too_large(limit, size=None):
    """Build the 413 error for an upload over `limit` bytes (of `size` bytes when known)."""
    sent = f" This one is {_readable_size(size)}." if size else ""
    return FileTooLarge(
        f"The upload is larger than the limit of {_readable_size(limit)} per file.{sent} Nothing was stored; "
        "upload a smaller file.",
        {"limit_bytes": limit, "size_bytes": size},
    )


def _readable_size(size):
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"


def clean_name(raw):
    """Return the display name a user gave, less any folders in it and control characters.

    The name keeps its script and Unicode form (no normalisation) because it is only shown and sent
    back in Content-Disposition. It never becomes part of a storage path.
    """
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(character for character in name if character.isprintable() or character in "\u200c\u200d")
    name = name.strip()
    if name in ("", ".", ".."):
        raise ValidationError(
            f"The file name {raw!r} is empty once folders are removed; give the file a name.", {"name": "empty"}
        )
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(
            f"The file name is {len(name)} characters long; the limit is {NAME_MAX_LENGTH}.", {"name": "too long"}
        )
    return name


class _CountingReader:
    """Reads a stream after its first bytes, hashing and counting them; raises over the limit."""

    def __init__(self, head, stream, limit):
        self.head = head
        self.stream = stream
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()

    def read(self, size=-1):
        if self.head:
            chunk, self.head = self.head, b""
        else:
            chunk = self.stream.read(size)
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise too_large(self.limit)
        self.sha256.update(chunk)
        return chunk


def store_file(org_id, user_id, name, stream, folder_id=None, source="upload", limit=None):
    """Store the bytes of `stream` as a new file; the caller commits.

    Rolling the transaction back deletes the stored bytes again, so a failed request leaves none.
    """
    name = clean_name(name)
    folder = get_folder(org_id, folder_id) if folder_id else None
    head = stream.read(SNIFF_BYTES)
    key = new_key()
    reader = _CountingReader(head, stream, limit)
    get_storage().save(org_id, key, reader)
    _saved_keys(db.session()).append((org_id, key))
    # Raises LimitExceeded past the plan's storage; the rollback deletes the bytes just saved.
    check_storage(org_id, reader.size)

    stored = File(
        org_id=org_id,
        folder_id=folder.id if folder else None,
        name=name,
        storage_key=key,
        size=reader.size,
        content_type=sniff(head),
        sha256=reader.sha256.hexdigest(),
        source=source,
        uploaded_by_id=user_id,
    )
    db.session.add(stored)
    db.session.flush()
    logger.info(
        "file stored org_id=%s file_id=%s user_id=%s size=%s type=%s",
        org_id,
        stored.id,
        user_id,
        stored.size,
        stored.content_type,
    )
    return stored


def _saved_keys(session):
    return session.info.setdefault("floyo_saved_files", [])


def _doomed_keys(session):
    return session.info.setdefault("floyo_doomed_files", [])


@event.listens_for(Session, "after_commit")
def _delete_doomed_bytes(session):
    session.info.pop("floyo_saved_files", None)
    for org_id, key in session.info.pop("floyo_doomed_files", []):
        try:
            get_storage().delete(org_id, key)
        except Exception:
            # The row is gone; the bytes are an orphan that costs space but is never served.
            logger.exception("deleting file bytes failed org_id=%s key=%s", org_id, key)


@event.listens_for(Session, "after_rollback")
def _delete_unsaved_bytes(session):
    session.info.pop("floyo_doomed_files", None)
    for org_id, key in session.info.pop("floyo_saved_files", []):
        try:
            get_storage().delete(org_id, key)
        except Exception:
            logger.exception("deleting bytes of a rolled back upload failed org_id=%s key=%s", org_id, key)


def open_content(stored):
    return get_storage().open(stored.org_id, stored.storage_key)


# Loading, scoped by organization


def get_file(org_id, file_id, trashed=None):
    """Return the organization's file, or raise NotFound (also for another organization's file)."""
    stored = db.session.scalar(select(File).where(File.org_id == org_id, File.id == file_id))
    if stored is None or (trashed is not None and (stored.deleted_at is not None) != trashed):
        raise NotFound(f"File {file_id} was not found.")
    return stored


def get_folder(org_id, folder_id):
    folder = db.session.scalar(select(Folder).where(Folder.org_id == org_id, Folder.id == folder_id))
    if folder is None:
        raise NotFound(f"Folder {folder_id} was not found.")
    return folder


# Listing


def list_files(org_id, folder_id=None, search=None, sort="name", order="asc", trashed=False, page=1, per_page=50):
    """Return (files, total) of one page: a folder's files, or with `search` matching names in every folder."""
    if sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}.", {"sort": "unknown sort"})
    if order not in ("asc", "desc"):
        raise ValidationError(f"order must be asc or desc, got {order!r}.", {"order": "unknown order"})
    statement = _listing(org_id, folder_id, search, trashed)
    total = db.session.scalar(select(func.count()).select_from(statement.subquery()))
    column = SORTS[sort]
    ordering = (column.asc(), File.id.asc()) if order == "asc" else (column.desc(), File.id.desc())
    files = db.session.scalars(statement.order_by(*ordering).offset((page - 1) * per_page).limit(per_page)).all()
    return files, total


def _listing(org_id, folder_id, search, trashed):
    statement = select(File).where(File.org_id == org_id)
    statement = statement.where(File.deleted_at.is_not(None) if trashed else File.deleted_at.is_(None))
    if search:
        # NOTE: SQLite's lower() folds ASCII only, so there a search is case-sensitive for other scripts.
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(func.lower(File.name).like(f"%{escaped.lower()}%", escape="\\"))
    elif not trashed:
        statement = statement.where(File.folder_id == folder_id if folder_id else File.folder_id.is_(None))
    return statement


def list_files_after(org_id, after_id, limit, folder_id=None, search=None, trashed=False, any_folder=False):
    """Return up to limit + 1 files with ids above `after_id`, by id, for cursor pagination."""
    if any_folder and not search:
        statement = select(File).where(
            File.org_id == org_id, File.deleted_at.is_not(None) if trashed else File.deleted_at.is_(None)
        )
    else:
        statement = _listing(org_id, folder_id, search, trashed)
    if after_id:
        statement = statement.where(File.id > after_id)
    return db.session.scalars(statement.order_by(File.id).limit(limit + 1)).all()


def list_folders(org_id, parent_id=None):
    statement = select(Folder).where(Folder.org_id == org_id)
    statement = statement.where(Folder.parent_id == parent_id if parent_id else Folder.parent_id.is_(None))
    return db.session.scalars(statement.order_by(Folder.name, Folder.id)).all()


def folder_paths(org_id):
    """Return every folder of the organization as (id, "Parent / Child"), for choosing where to move a file."""
    folders = db.session.scalars(select(Folder).where(Folder.org_id == org_id)).all()
    by_id = {folder.id: folder for folder in folders}

    def path_of(folder):
        parts = []
        seen = set()
        while folder is not None and folder.id not in seen:
            seen.add(folder.id)
            parts.append(folder.name)
            folder = by_id.get(folder.parent_id)
        return " / ".join(reversed(parts))

    return sorted(((folder.id, path_of(folder)) for folder in folders), key=lambda item: item[1].lower())


def breadcrumbs(folder):
    trail = []
    seen = set()
    while folder is not None and folder.id not in seen:
        seen.add(folder.id)
        trail.append(folder)
        folder = db.session.get(Folder, folder.parent_id) if folder.parent_id else None
    return list(reversed(trail))


def storage_usage(org_id):
    """Bytes the organization stores, trash included (the trash still takes space until emptied)."""
    return int(db.session.scalar(select(func.coalesce(func.sum(File.size), 0)).where(File.org_id == org_id)))


# Changing


def rename_file(org_id, file_id, name):
    stored = get_file(org_id, file_id, trashed=False)
    stored.name = clean_name(name)
    stored.updated_at = utcnow()
    return stored


def move_file(org_id, file_id, folder_id):
    """Move a file into the folder `folder_id`, or to the top level when it is None."""
    stored = get_file(org_id, file_id, trashed=False)
    stored.folder_id = get_folder(org_id, folder_id).id if folder_id else None
    stored.updated_at = utcnow()
    return stored


def trash_file(org_id, file_id):
    stored = get_file(org_id, file_id, trashed=False)
    stored.deleted_at = utcnow()
    return stored


def restore_file(org_id, file_id):
    """Take a file out of the trash, into its folder or the top level when the folder is gone."""
    stored = get_file(org_id, file_id, trashed=True)
    stored.deleted_at = None
    stored.updated_at = utcnow()
    return stored


def delete_file(org_id, stored):
    """Delete the row now and the bytes after the commit."""
    _doomed_keys(db.session()).append((org_id, stored.storage_key))
    db.session.delete(stored)


def empty_trash(org_id):
    """Delete every file in the trash; return how many."""
    files = db.session.scalars(select(File).where(File.org_id == org_id, File.deleted_at.is_not(None))).all()
    for stored in files:
        delete_file(org_id, stored)
    logger.info("trash emptied org_id=%s files=%s", org_id, len(files))
    return len(files)


def create_folder(org_id, name, parent_id=None):
    name = clean_name(name)
    parent = get_folder(org_id, parent_id) if parent_id else None
    if find_folder(org_id, name, parent.id if parent else None) is not None:
        raise Conflict(f"A folder named {name!r} already exists here; choose another name.", {"name": "taken"})
    folder = Folder(org_id=org_id, name=name, parent_id=parent.id if parent else None)
    db.session.add(folder)
    db.session.flush()
    return folder


def find_folder(org_id, name, parent_id=None):
    statement = select(Folder).where(Folder.org_id == org_id, Folder.name == name)
    statement = statement.where(Folder.parent_id == parent_id if parent_id else Folder.parent_id.is_(None))
    return db.session.scalars(statement.limit(1)).first()


def delete_folder(org_id, folder_id):
    """Delete an empty folder. Files in the trash that were in it go to the top level if restored."""
    folder = get_folder(org_id, folder_id)
    has_files = db.session.scalar(
        select(func.count()).where(File.org_id == org_id, File.folder_id == folder.id, File.deleted_at.is_(None))
    )
    has_folders = db.session.scalar(select(func.count()).where(Folder.parent_id == folder.id))
    if has_files or has_folders:
        raise Conflict(f"The folder {folder.name!r} is not empty; move or delete what is in it first.")
    db.session.execute(File.__table__.update().where(File.folder_id == folder.id).values(folder_id=None))
    db.session.delete(folder)
    return folder


def exports_folder(org_id):
    """Return the folder that export jobs leave their files in, creating it on first use."""
    return find_folder(org_id, EXPORTS_FOLDER) or create_folder(org_id, EXPORTS_FOLDER)


def store_workflow_file(org_id, user_id, relative_path, stream):
    """Store a file that a workflow step wrote as Workflows/<relative_path>; the caller commits.

    Each folder of the path becomes a folder in the file manager. A file the workflows stored
    before under the same path is replaced, as writing the path again replaced it on disk.
    """
    *folder_names, name = [part for part in relative_path.split("/") if part]
    folder = find_folder(org_id, WORKFLOWS_FOLDER) or create_folder(org_id, WORKFLOWS_FOLDER)
    for folder_name in folder_names:
        folder = find_folder(org_id, clean_name(folder_name), folder.id) or create_folder(
            org_id, folder_name, folder.id
        )
    previous = db.session.scalars(
        select(File).where(
            File.org_id == org_id,
            File.folder_id == folder.id,
            File.name == clean_name(name),
            File.source == "workflow",
            File.deleted_at.is_(None),
        )
    ).all()

    stored = store_file(org_id, user_id, name, stream, folder_id=folder.id, source="workflow")
    for old in previous:
        delete_file(org_id, old)
    return stored
