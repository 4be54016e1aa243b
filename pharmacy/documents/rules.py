"""What a faxed or scanned prescription may be (pure): the file type from its first bytes, never from its name.

A fax server names files whatever it likes and a browser reports whatever type the name suggests; only the content
decides. PDF, TIFF (the fax format), PNG and JPEG are accepted — anything else is refused before it is stored.
"""
from __future__ import annotations

import hashlib
from enum import StrEnum

from pharmacy.core.errors import ValidationFailed


class DocumentType(StrEnum):
    PDF = "application/pdf"
    TIFF = "image/tiff"
    PNG = "image/png"
    JPEG = "image/jpeg"


class DocumentSource(StrEnum):
    UPLOAD = "upload"
    FOLDER = "folder"  # the watched folder a fax server writes to


MAGIC: tuple[tuple[bytes, DocumentType], ...] = (
    (b"%PDF-", DocumentType.PDF),
    (b"II*\x00", DocumentType.TIFF),
    (b"MM\x00*", DocumentType.TIFF),
    (b"\x89PNG\r\n\x1a\n", DocumentType.PNG),
    (b"\xff\xd8\xff", DocumentType.JPEG),
)
MAX_PAGES = 50
#: The largest image (pixels) decoded: a page scanned at 300 dpi is about 8.4 million; this leaves room for 600 dpi
#: and refuses a "decompression bomb" (a small file that decodes to gigabytes).
MAX_PIXELS = 40_000_000


def sniff(data: bytes) -> DocumentType | None:
    """The document's type from its first bytes (a PDF may start after a little junk, as the format allows)."""
    for magic, kind in MAGIC:
        if data.startswith(magic):
            return kind
    if b"%PDF-" in data[:1024]:
        return DocumentType.PDF
    return None


def check(data: bytes, *, max_bytes: int) -> DocumentType:
    """The type of an acceptable document, or ValidationFailed saying why it is refused."""
    if not data:
        raise ValidationFailed("The file is empty.", fields={"file": "Choose a PDF, TIFF, PNG or JPEG file."})
    if len(data) > max_bytes:
        raise ValidationFailed("The file is too large.",
                               fields={"file": f"At most {max_bytes // (1024 * 1024)} MB."})
    kind = sniff(data)
    if kind is None:
        raise ValidationFailed("The file is not a PDF, TIFF, PNG or JPEG.",
                               fields={"file": "Only PDF, TIFF, PNG and JPEG are accepted (checked from the content)."})
    return kind


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_name(name: str | None) -> str:
    """A file name to show: the last path part, printable characters only, at most 120 characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable() and c not in "<>\"'")
    return cleaned.strip()[:120] or "document"
