"""Request and response handling shared by the file pages and the file API."""

from flask import current_app, request, send_file
from werkzeug.exceptions import RequestEntityTooLarge

from app.files import service
from app.files.sniff import PREVIEWABLE, serving_type

# Room for the multipart boundaries and headers around one file of the maximum size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# A rejected body up to this many times the limit is read and dropped, so that the client, still
# sending, gets to read the 413 instead of a connection reset. Larger bodies are not drained.
DRAIN_FACTOR = 4
DRAIN_CHUNK_BYTES = 64 * 1024


def receive_uploads(field="file"):
    """Return the uploaded files of the request; raise the 413 FileTooLarge over the limit.

    The limit applies to the whole request, so nothing over it is parsed into a temporary file.
    """
    limit = current_app.config["FILE_MAX_UPLOAD_BYTES"]
    request.max_content_length = limit + MULTIPART_OVERHEAD_BYTES
    try:
        uploads = [upload for upload in request.files.getlist(field) if upload.filename]
    except RequestEntityTooLarge:
        _drain(limit)
        raise service.too_large(limit, request.content_length) from None
    return uploads, limit


def _drain(limit):
    length = request.content_length
    if length is None or length > limit * DRAIN_FACTOR:
        return
    stream = request.environ["wsgi.input"]
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(DRAIN_CHUNK_BYTES, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


def file_response(stored, inline=False):
    """Send a stored file: inline only for images and PDFs, as an attachment for everything else.

    HTML, SVG and XML go out as application/octet-stream, and every response carries nosniff, so a
    browser never runs an uploaded page or script in this site's origin.
    """
    previewable = stored.content_type in PREVIEWABLE
    response = send_file(
        service.open_content(stored),
        mimetype=serving_type(stored.content_type),
        as_attachment=not (inline and previewable),
        download_name=stored.name,
        etag=stored.sha256,
        max_age=0,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not previewable:
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Content-Length"] = str(stored.size)
    return response
