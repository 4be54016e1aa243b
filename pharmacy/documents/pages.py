"""Counting and drawing the pages of a faxed or scanned prescription (no database, no Flask).

PDFs are drawn with pdfium (pypdfium2), TIFF/PNG/JPEG with Pillow; every page is sent to the browser as a freshly
encoded PNG, so what the browser decodes is always our own output (no metadata, no odd codecs from a fax server).
"""
from __future__ import annotations

import io
import threading
import warnings

import pypdfium2 as pdfium
from PIL import Image, ImageSequence, UnidentifiedImageError

from pharmacy.core.errors import ValidationFailed
from pharmacy.documents.rules import MAX_PAGES, MAX_PIXELS, DocumentType

PAGE_WIDTH = 1100  # pixels: readable beside the form on a 1280-pixel screen, sharp when zoomed
_PDFIUM = threading.Lock()  # pdfium is not thread-safe; pages are drawn one at a time per process


def _unreadable(kind: DocumentType) -> ValidationFailed:
    name = {DocumentType.PDF: "PDF", DocumentType.TIFF: "TIFF"}.get(kind, "image")
    return ValidationFailed(f"The file could not be read as a {name}.",
                            fields={"file": f"The file starts like a {name} but cannot be opened; ask for it again."})


def _open_image(data: bytes) -> Image.Image:
    """Opened (header only) and checked for size before anything is decoded."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValidationFailed("The image is too large.", fields={"file": "Scan at 300 dpi or less."})
    return image


def count_pages(data: bytes, kind: DocumentType) -> int:
    """The number of pages; ValidationFailed when the file cannot be opened or has too many."""
    try:
        # A warning while reading (a corrupt tag, a decompression bomb) means a file not to trust: refused.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if kind == DocumentType.PDF:
                with _PDFIUM:
                    pdf = pdfium.PdfDocument(data)
                    try:
                        count = len(pdf)
                    finally:
                        pdf.close()
            else:
                image = _open_image(data)
                count = getattr(image, "n_frames", 1) if kind == DocumentType.TIFF else 1
                for frame in ImageSequence.Iterator(image):
                    frame.load()
    except ValidationFailed:
        raise
    except (pdfium.PdfiumError, UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError,
            Image.DecompressionBombError, Warning):
        raise _unreadable(kind) from None
    if count < 1:
        raise _unreadable(kind)
    if count > MAX_PAGES:
        raise ValidationFailed("Too many pages.", fields={"file": f"At most {MAX_PAGES} pages per document."})
    return count


def render_page(data: bytes, kind: DocumentType, index: int, *, width: int = PAGE_WIDTH) -> bytes:
    """Page `index` (0-based) as a PNG `width` pixels wide (never larger than the scan itself for images)."""
    if kind == DocumentType.PDF:
        with _PDFIUM:
            pdf = pdfium.PdfDocument(data)
            try:
                page = pdf[index]
                page_width, _height = page.get_size()
                bitmap = page.render(scale=min(width / max(page_width, 1.0), 4.0))
                image = bitmap.to_pil()
                page.close()
            finally:
                pdf.close()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checked when it was stored
            source = _open_image(data)
            image = ImageSequence.Iterator(source)[index].copy()
        if image.width > width:
            image = image.resize((width, max(int(image.height * width / image.width), 1)))
    if image.mode not in ("1", "L", "RGB", "RGBA"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
