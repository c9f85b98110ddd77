"""Content types detected from a file's first bytes, never from its name or the client's header."""

import re

SNIFF_BYTES = 4096
OCTET_STREAM = "application/octet-stream"

# (signature at offset 0, type), checked in order. Sources: the file formats' specifications as
# summarised by the WHATWG MIME Sniffing standard (images, PDF, archives, audio and video).
SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b\x08", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"OggS\x00", "application/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-msdownload"),
)

# Markup that a browser would run as a page or a script: matched case-insensitively near the start.
HTML_MARKERS = re.compile(
    rb"<(!doctype\s+html|html|head|body|script|iframe|object|embed|style|title|a\s|img\s|div|meta|link|svg)[\s>/]",
    re.IGNORECASE,
)
SVG_MARKER = re.compile(rb"<svg[\s>]", re.IGNORECASE)
XML_DECLARATION = re.compile(rb"^\s*<\?xml", re.IGNORECASE)

# Types a browser may show inline from this app. Everything else is served as an attachment.
PREVIEWABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf"})
# Types a browser would execute or render as a document; they are served as application/octet-stream.
ACTIVE = frozenset({"text/html", "image/svg+xml", "application/xml", "text/xml", "application/xhtml+xml"})


def sniff(head):
    """Return the content type of a file whose first bytes (up to SNIFF_BYTES) are `head`."""
    for signature, content_type in SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if SVG_MARKER.search(text[:SNIFF_BYTES]):
        return "image/svg+xml"
    if HTML_MARKERS.search(text[:SNIFF_BYTES]):
        return "text/html"
    if XML_DECLARATION.match(text):
        return "application/xml"
    if _is_text(head):
        return "text/plain"
    return OCTET_STREAM


def _is_text(head):
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The sample may end inside a multi-byte character; only an error before the last 3 bytes counts.
        if error.start < len(head) - 3:
            return False
    return True


def serving_type(content_type):
    """The Content-Type to send a stored file with: active content never keeps its executable type."""
    if content_type in ACTIVE:
        return OCTET_STREAM
    if content_type == "text/plain":
        return "text/plain; charset=utf-8"
    return content_type
