"""The file step: write, copy or zip files in the organization's file area.

Layout: FILE_STORAGE_PATH/<org_id>/workflows/<relative path> (FILE_STORAGE_PATH defaults to
INSTANCE_PATH/files). The file manager keeps uploads beside it under generated two-hex-digit
folders, so the `workflows` folder never collides with them. Step paths are relative to that
folder; absolute paths, `..` and symbolic links that lead outside it are rejected.
"""

import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from flask import current_app

MAX_WRITE_BYTES = 10 * 1024 * 1024


def _failed(message):
    from app.workflows.steps import StepFailed

    return StepFailed(message)


def files_root(org_id, app=None):
    """The organization's file area; created on first use."""
    config = (app or current_app).config
    root = Path(config["FILE_STORAGE_PATH"]) / str(int(org_id)) / "workflows"
    root.mkdir(parents=True, exist_ok=True)
    return root


def resolve_in_area(root, relative):
    """Return the absolute path of `relative` inside `root`, or raise StepFailed if it would leave it."""
    if not isinstance(relative, str) or not relative.strip():
        raise _failed("The file path is empty after filling in its template.")
    pure = PurePosixPath(relative.strip().replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise _failed(f"{relative!r} must be a path inside the file area, without '..' or a leading '/'.")
    target = (root / pure).resolve()
    if not target.is_relative_to(root.resolve()):
        raise _failed(f"{relative!r} leads outside the file area.")
    return target


def run_file(context):
    config = context.config
    root = files_root(context.org_id)
    action = config["action"]
    if action == "write":
        target = resolve_in_area(root, config["path"])
        content = config.get("content")
        data = (content if isinstance(content, str) else json.dumps(content, indent=2)).encode()
        if len(data) > MAX_WRITE_BYTES:
            raise _failed(f"The content is larger than {MAX_WRITE_BYTES} bytes.")
        context.in_thread(lambda: _write(target, data))
        context.log(f"wrote {len(data)} bytes to {config['path']}")
        return {"path": _relative(root, target), "size": len(data), "file_id": _publish(context, root, target)}
    if action == "copy":
        source = resolve_in_area(root, config["source"])
        target = resolve_in_area(root, config["destination"])
        if not source.is_file():
            raise _failed(f"The source file {config['source']!r} does not exist in the file area.")
        context.in_thread(lambda: _copy(source, target))
        context.log(f"copied {config['source']} to {config['destination']}")
        return {
            "path": _relative(root, target),
            "size": target.stat().st_size,
            "file_id": _publish(context, root, target),
        }
    sources = [resolve_in_area(root, item) for item in config["sources"]]
    missing = [item for item, path in zip(config["sources"], sources, strict=True) if not path.exists()]
    if missing:
        raise _failed(f"Files not found in the file area: {', '.join(missing[:5])}.")
    target = resolve_in_area(root, config["destination"])
    count = context.in_thread(lambda: _zip(root, sources, target))
    context.log(f"zipped {count} files into {config['destination']}")
    return {
        "path": _relative(root, target),
        "size": target.stat().st_size,
        "files": count,
        "file_id": _publish(context, root, target),
    }


def _publish(context, root, target):
    """Store a copy of the written file in the file manager, as Workflows/<path>; return its id.

    The runner commits the copy with the step's attempt.
    """
    from app.errors import ServiceError
    from app.files import service as files

    try:
        with target.open("rb") as stream:
            stored = files.store_workflow_file(context.org_id, context.user_id, _relative(root, target), stream)
    except ServiceError as error:
        # NOTE: nothing rolls the session back here, so bytes that store_file saved before it
        # raised (over the plan's storage limit, say) stay in storage without a row.
        raise _failed(f"Storing {_relative(root, target)} in Files failed: {error.message}") from None
    context.log(f"stored in Files as Workflows/{_relative(root, target)} (file {stored.id})")
    return stored.id


def _relative(root, path):
    return path.relative_to(root.resolve()).as_posix()


def _write(target, data):
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)


def _copy(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _zip(root, sources, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    count = 0
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sources:
            paths = sorted(source.rglob("*")) if source.is_dir() else [source]
            for path in paths:
                resolved = path.resolve()
                if path.is_file() and resolved.is_relative_to(base) and resolved != target:
                    archive.write(resolved, resolved.relative_to(base).as_posix())
                    count += 1
    partial.replace(target)
    return count
