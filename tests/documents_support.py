"""Faxes and scans for the tests: a one-page prescription drawn as a PDF (reportlab), a two-page fax TIFF, a PNG."""
from __future__ import annotations

import io

from PIL import Image, ImageDraw
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas

LINES = [
    "Lakeside Neurology - 900 Lakeshore Drive, Springfield IL - Fax (217) 555-0191",
    "",
    "Rx   for: Margaret Ellison      DOB: 04/12/1968",
    "     14 Oak Lane, Springfield IL 62704",
    "",
    "Naltrexone (LDN) 4.5 mg capsules, compounded",
    "Sig: Take 1 capsule by mouth at bedtime",
    "Disp: #30 (thirty)    Refills: 5",
    "Dx: G35 multiple sclerosis",
    "",
    "Adaeze Okafor, MD   NPI 1987654328       Date: 11/20/2026",
]


def prescription_pdf(pages: int = 1, marker: str = "") -> bytes:
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=letter)
    for page in range(pages):
        pdf.setFont("Helvetica-Bold", 16)
        pdf.drawString(72, 720, "PRESCRIPTION" + (f" (page {page + 1})" if pages > 1 else ""))
        pdf.setFont("Helvetica", 12)
        for i, line in enumerate(LINES):
            pdf.drawString(72, 690 - 20 * i, line)
        if marker:
            pdf.drawString(72, 100, marker)
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def fax_tiff(pages: int = 2) -> bytes:
    frames = []
    for n in range(pages):
        image = Image.new("1", (850, 1100), 1)
        draw = ImageDraw.Draw(image)
        for i, line in enumerate([f"FAX page {n + 1} of {pages}", *LINES]):
            draw.text((60, 60 + 30 * i), line, fill=0)
        frames.append(image)
    out = io.BytesIO()
    frames[0].save(out, format="TIFF", save_all=True, append_images=frames[1:], compression="group4")
    return out.getvalue()


def scan_png() -> bytes:
    image = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(image).text((20, 20), "Rx: Naltrexone 1.5 mg capsules", fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
