"""PDFs: the patient label of an order and its compounding record (ReportLab, pip-only: no system packages).

The label follows docs/domain.md "Label safety (ISMP)": ISMP-safe numbers and units, directions in plain
words, storage, the opioid warning on every label, and a dated chart for a titration. The record
carries the USP <795> compounding-record fields (docs/domain.md "Compounding standards").
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import date
from html import escape
from typing import Any

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.pagesizes import LETTER, inch
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from pharmacy.compounding import queries, rules
from pharmacy.compounding.rules import UspCategory
from pharmacy.core.actor import Actor
from pharmacy.core.clock import local_date
from pharmacy.core.context import settings, today
from pharmacy.core.errors import Conflict
from pharmacy.prescriptions import rules as rx_rules

LABEL_SIZE = (4 * inch, 6 * inch)  # a common pharmacy label / shipping label stock


@dataclass(frozen=True)
class LabelStock:
    """A label stock the pharmacy's printers take: its page size, margins and base font size."""

    name: str
    size: tuple[float, float]
    margin: float
    base: float
    bar_height: float


# 4 × 6 in (portrait: shipping and pharmacy label stock) and 2 × 4 in direct-thermal (landscape): the two stocks a
# compounding counter usually has. A label that does not fit one 2 × 4 continues on the next (the printer feeds on).
STOCKS = {
    "4x6": LabelStock("4x6", LABEL_SIZE, 0.2 * inch, 10.0, 0.5 * inch),
    "2x4": LabelStock("2x4", (4 * inch, 2 * inch), 0.08 * inch, 6.5, 0.25 * inch),
}
DEFAULT_STOCK = "4x6"
COMPOUNDED_STATEMENT = "This medicine was compounded by the pharmacy for you. It is not an FDA-approved product."
CHILDREN_WARNING = "Keep out of reach of children."


def _opioid_warning() -> str:
    return getattr(rx_rules, "OPIOID_LABEL_WARNING", "Do not take with opioid pain medicines.")


@dataclass
class LabelData:
    pharmacy_name: str
    pharmacy_address: str
    pharmacy_phone: str
    patient_name: str
    rx_number: str
    fill_text: str
    product: str
    directions: str
    quantity: str
    days_supply: int
    refills_left: int
    prescriber: str
    date_filled: date
    lot_number: str
    bud: date
    storage: str
    warning: str
    cap_note: str | None = None
    chart: list[tuple[str, str, str]] = field(default_factory=list)
    pharmacist: str = ""  # the pharmacist answerable for this fill: the final check's, else the verifier's
    bag_code: str = ""  # the Code 128 barcode's text: Rx number and fill, scanned at the counter


def storage_text(category: UspCategory, formula_storage: str | None) -> str:
    """The master formula's storage words, except that an unpreserved aqueous preparation always says
    "refrigerator" (its 14-day BUD assumes it; docs/domain.md: aqueous preparations carry their storage)."""
    if UspCategory(category) is UspCategory.AQUEOUS_UNPRESERVED:
        return rules.STORAGE_TEXT[UspCategory.AQUEOUS_UNPRESERVED]
    return (formula_storage or "").strip() or rules.STORAGE_TEXT[UspCategory(category)]


def label_data(actor: Actor, order_id: int) -> LabelData:
    """What the label prints; refused (409) before compounding, when there is no lot number or BUD yet."""
    view = queries.order_view(actor, order_id, audit_action="order.label")
    order, rx, formula = view.order, view.rx, view.formula
    assert formula is not None
    if order.lot_number is None or order.bud is None:
        raise Conflict("The label is printed once the order has been compounded: it needs the lot number and the "
                       "beyond-use date.")
    cfg = settings()
    filled = local_date(order.compounded_at, cfg.timezone) if order.compounded_at else today()
    return LabelData(
        pharmacy_name=cfg.pharmacy_name, pharmacy_address=cfg.pharmacy_address, pharmacy_phone=cfg.pharmacy_phone,
        patient_name=f"{view.patient.first_name} {view.patient.last_name}", rx_number=rx.rx_number,
        fill_text=rules.fill_label(order.authorized_fill, partial=view.fill_progress is not None),
        product=view.product, directions=rx.directions,
        quantity=rx_rules.quantity_text(formula.form, order.quantity), days_supply=order.days_supply,
        refills_left=view.refills_left, prescriber=rx.prescriber.display_name, date_filled=filled,
        lot_number=order.lot_number, bud=order.bud, storage=storage_text(formula.usp_category, formula.storage),
        warning=_opioid_warning(), cap_note=order.cap_note or view.fill_progress, chart=view.chart,
        pharmacist=view.name(order.checked_by_id or order.verified_by_id) if (
            order.checked_by_id or order.verified_by_id) else "",
        bag_code=rules.bag_code(rx.rx_number, order.fill_number),
    )


def _styles(base: float) -> dict[str, ParagraphStyle]:
    return {
        "small": ParagraphStyle("small", fontName="Helvetica", fontSize=base - 1.5, leading=base + 0.5),
        "body": ParagraphStyle("body", fontName="Helvetica", fontSize=base, leading=base + 2.5),
        "bold": ParagraphStyle("bold", fontName="Helvetica-Bold", fontSize=base, leading=base + 2.5),
        "big": ParagraphStyle("big", fontName="Helvetica-Bold", fontSize=base + 3, leading=base + 6),
        "title": ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=base + 5, leading=base + 9),
        "warn": ParagraphStyle("warn", fontName="Helvetica-Bold", fontSize=base + 0.5, leading=base + 3,
                               textColor=colors.white),
    }


_UNIT = re.compile(r"(\d) (mg/mL|mg|mL|capsules?|days?)\b")


def _keep(text: object) -> str:
    """Escaped (Paragraph reads markup; names and directions are typed by people), and a number never
    wraps away from its unit: "1.5 / mg" on two lines is how doses get misread (ISMP)."""
    return _UNIT.sub("\\1\u00a0\\2", escape(str(text)))


def _p(text: object, style: ParagraphStyle) -> Paragraph:
    return Paragraph(_keep(text), style)


def _kv(label: str, value: object, s: dict[str, ParagraphStyle]) -> Paragraph:
    return Paragraph(f"<b>{escape(label)}:</b> {_keep(value)}", s["body"])


def _barcode(data: LabelData, stock: LabelStock, s: dict[str, ParagraphStyle], width: float) -> Table:
    """Code 128 of the Rx and fill number with its text beneath (typed when a scanner is not at hand)."""
    bar_width = 0.012 * inch if stock.name == "4x6" else 0.01 * inch  # 2 dots a module at a thermal 203 dpi
    code = Code128(data.bag_code, barHeight=stock.bar_height, barWidth=bar_width, quiet=True, humanReadable=False)
    text = ParagraphStyle("code", parent=s["bold"], alignment=1)
    box = Table([[code], [_p(data.bag_code, text)]], colWidths=[width])
    box.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                             ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 0)]))
    return box


def _label_head(data: LabelData, s: dict[str, ParagraphStyle], width: float) -> list[Any]:
    """Who dispensed it, for whom, what it is and how to take it (in this order: the 2 × 4 stock picks from it)."""
    return [
        _p(data.pharmacy_name, s["bold"]),
        _p(f"{data.pharmacy_address} · {data.pharmacy_phone}", s["small"]),
        Spacer(1, 3),
        Table([[_p(f"Rx {data.rx_number} · {data.fill_text}", s["bold"]),
                _p(f"Filled {rx_rules.format_date(data.date_filled)}", s["body"])]],
              colWidths=[width * 0.62, width * 0.38],
              style=[("LINEABOVE", (0, 0), (-1, 0), 0.75, colors.black), ("LEFTPADDING", (0, 0), (-1, -1), 0)]),
        _p(data.patient_name, s["big"]),
        _p(data.product, s["title"]),
        _p("Compounded preparation", s["bold"]),
        Spacer(1, 2),
        _p(data.directions, s["big"]),
        Spacer(1, 3),
    ]


def _label_facts(data: LabelData, s: dict[str, ParagraphStyle]) -> list[Any]:
    return [
        _kv("Quantity", f"{data.quantity} ({data.days_supply} days)", s),
        _kv("Refills left", data.refills_left, s),
        _kv("Prescriber", data.prescriber, s),
        _kv("Pharmacist", data.pharmacist or "—", s),
        _kv("Lot", data.lot_number, s),
        _kv("Discard after", f"{rx_rules.format_date(data.bud)} (beyond-use date)", s),
        _kv("Storage", data.storage, s),
    ]


def _label_warning(data: LabelData, s: dict[str, ParagraphStyle], width: float) -> Table:
    warning = Table([[_p(data.warning, s["warn"])]], colWidths=[width])
    warning.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.black),
                                 ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))
    return warning


def _titration_chart(data: LabelData, s: dict[str, ParagraphStyle], width: float) -> list[Any]:
    rows = [[_p("Dates", s["bold"]), _p("Each day", s["bold"]), _p("Dose", s["bold"])]]
    rows += [[_p(d, s["body"]), _p(a, s["body"]), _p(m, s["body"])] for d, a, m in data.chart]
    chart = Table(rows, colWidths=[width * 0.5, width * 0.27, width * 0.23], repeatRows=1)
    chart.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                               ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5)]))
    return [Spacer(1, 5), KeepTogether([_p("Titration chart: follow the dates", s["bold"]), chart])]


def render_label(data: LabelData, stock: str = DEFAULT_STOCK) -> bytes:
    """A patient label on the chosen stock (4 × 6 in, or 2 × 4 in thermal); a titration chart, or on the small stock
    the rest of the label, continues on the next label."""
    st = STOCKS[stock]
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=st.size, leftMargin=st.margin, rightMargin=st.margin,
                            topMargin=st.margin, bottomMargin=st.margin,
                            title=f"Label {data.rx_number} lot {data.lot_number}", author=data.pharmacy_name)
    s = _styles(st.base)
    width = st.size[0] - 2 * st.margin - 12  # the frame keeps 6 pt of padding each side
    warning = _label_warning(data, s, width)
    head = _label_head(data, s, width)
    facts = _label_facts(data, s)
    tail = [Spacer(1, 3), warning, Spacer(1, 2), _p(CHILDREN_WARNING, s["bold"]), _p(COMPOUNDED_STATEMENT, s["small"])]
    if data.cap_note:
        tail += [Spacer(1, 2), _p(data.cap_note, s["small"])]
    tail += [Spacer(1, 4), _barcode(data, st, s, width)]
    if st.name == "2x4":
        # The first small label carries what the counter and the patient need at once (who, what, how, the warning,
        # the barcode); the facts continue on the next label.
        story = [head[0], head[3], head[4], head[5], head[6], head[8], warning, Spacer(1, 1),
                 _barcode(data, st, s, width),
                 _p(f"Rx {data.rx_number} · {data.patient_name} · label 2 of 2", s["bold"]),
                 _p(f"{data.pharmacy_name} · {data.pharmacy_address} · {data.pharmacy_phone}", s["small"]),
                 *facts, *tail[2:-2]]
    else:
        story = head + facts + tail
    if data.chart:
        story += _titration_chart(data, s, width)
    doc.build(story)
    return buf.getvalue()


def label_pdf(actor: Actor, order_id: int, *, stock: str = DEFAULT_STOCK) -> bytes:
    return render_label(label_data(actor, order_id), stock)


# ---- the compounding record ---------------------------------------------------------------------------


def record_view(actor: Actor, order_id: int) -> queries.OrderView:
    """The compounding record page's data (the same order view, audited as a record read)."""
    view = queries.order_view(actor, order_id, audit_action="order.record")
    if view.order.compounded_at is None:
        raise Conflict("There is no compounding record yet: the order has not been compounded.")
    return view


def bud_note(view: queries.OrderView) -> str | None:
    """Said on the record when a lot's expiry, not the USP <795> default, set the beyond-use date."""
    order, formula = view.order, view.formula
    if formula is None or order.compounded_at is None:
        return None
    lots = [(u.ingredient_lot.ingredient_name, u.ingredient_lot.lot_number, u.ingredient_lot.expiry_date)
            for u in view.lots]
    return rules.bud_cap_note(formula.usp_category, local_date(order.compounded_at, settings().timezone),
                              order.bud, lots)


def _grid(rows: list[list[object]], widths: list[float], s: dict[str, ParagraphStyle], header: bool = True) -> Table:
    cells = [[c if isinstance(c, Paragraph) else _p(c, s["small"] if header and i else s["body"])
              for c in row] for i, row in enumerate(rows)]
    t = Table(cells, colWidths=widths, repeatRows=1 if header else 0)
    style = [("GRID", (0, 0), (-1, -1), 0.5, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey))
    t.setStyle(TableStyle(style))
    return t


def _when(value: Any, tz: Any) -> str:
    return value.astimezone(tz).strftime("%b %-d, %Y %-I:%M %p") if value else "—"


def made_text(view: queries.OrderView, batch: queries.BatchRecord | None) -> tuple[str, str]:
    """"Quantity to make" and "Total quantity made" as the record states them: an order made on its own, its own;
    one made in a batch, the batch's (what was counted), with the order's whole share and its place."""
    order, form = view.order, view.formula.form if view.formula else None
    mine = rx_rules.quantity_text(form, order.quantity)
    if batch is None:
        made = rx_rules.quantity_text(form, order.quantity_made) if order.quantity_made else "—"
        return mine, made
    to_make = f"{rx_rules.quantity_text(form, batch.expected)} for the batch of {batch.orders} orders (this order: {mine})"
    made = (f"{rx_rules.quantity_text(form, batch.made)} for the whole batch (this order: {mine}, "
            f"{batch.place} of {batch.orders})") if batch.made is not None else "—"
    return to_make, made


def _record_facts(view: queries.OrderView, tz: Any, batch: queries.BatchRecord | None = None) -> list[list[object]]:
    order, rx, formula = view.order, view.rx, view.formula
    assert formula is not None
    to_make, made = made_text(view, batch)
    note = bud_note(view)
    bud = (f"{rx_rules.format_date(order.bud)} ({formula.bud_reference}; {rules.BUD_DAYS[formula.usp_category]} days, "
           f"or the earliest ingredient expiry)" + (f". {note}" if note else "")) if order.bud else "—"
    return [
        ["Formula", f"{formula.name} ({formula.code}), version {order.formula_version or formula.version}"],
        ["Strength and form", view.product],
        ["USP <795> category", rules.CATEGORY_LABELS[formula.usp_category]],
        ["Date compounded", _when(order.compounded_at, tz)],
        ["Rx number / fill",
         f"{rx.rx_number} / {rules.fill_label(order.authorized_fill, partial=view.fill_progress is not None)}"],
        ["Batch lot number", order.lot_number or "—"],
        ["Patient", f"{view.patient.last_name}, {view.patient.first_name}"],
        ["Quantity to make", to_make],
        ["Total quantity made", made],
        ["Beyond-use date", bud],
        ["Storage", storage_text(formula.usp_category, formula.storage)],
        ["Container", formula.container],
    ]


def used_amount(u: Any, batch: queries.BatchRecord | None) -> str:
    """What was weighed of one lot: for a batch order, the whole batch's amount (its record's measurement)."""
    amount = batch.used.get(u.ingredient_lot_id, u.quantity_used) if batch is not None else u.quantity_used
    return f"{rx_rules.format_amount(amount)} {u.unit}" if amount is not None else "not yet weighed"


def _record_ingredients(view: queries.OrderView, batch: queries.BatchRecord | None = None) -> list[list[object]]:
    heading = "Quantity used (whole batch)" if batch is not None else "Quantity used"
    rows: list[list[object]] = [["Ingredient", "Supplier", "Lot", "Expiry", heading]]
    rows += [[u.ingredient_lot.ingredient_name, u.ingredient_lot.supplier, u.ingredient_lot.lot_number,
              rx_rules.format_date(u.ingredient_lot.expiry_date), used_amount(u, batch)] for u in view.lots]
    return rows


def _record_people(view: queries.OrderView, tz: Any) -> list[list[object]]:
    order = view.order
    return [["Step", "Who", "When"],
            ["Verified", view.name(order.verified_by_id), _when(order.verified_at, tz)],
            ["Compounded", view.name(order.compounded_by_id), _when(order.compounded_at, tz)],
            ["Checked", view.name(order.checked_by_id), _when(order.checked_at, tz)],
            ["Released", view.name(order.released_by_id), _when(order.released_at, tz)],
            ["Dispensed", view.name(order.dispensed_by_id), _when(order.dispensed_at, tz)]]


def _record_quality(view: queries.OrderView) -> list[list[object]]:
    order, formula = view.order, view.formula
    assert formula is not None
    if order.qc_yield_pct is None:
        qc = "Not checked yet"
    else:
        verdict = "passed" if order.qc_passed else "FAILED"
        qc = f"{rx_rules.format_amount(order.qc_yield_pct)}% yield (95–105% passes): {verdict}"
    return [["Quality check", qc],
            ["Checks required", formula.quality_checks or "—"],
            ["QC notes", order.qc_notes or "—"],
            ["Deviations", order.deviations or "None recorded"]]


def record_pdf(actor: Actor, order_id: int) -> bytes:
    """The USP <795> compounding record of one batch, as a Letter page to sign and file."""
    view = record_view(actor, order_id)
    order, formula = view.order, view.formula
    assert formula is not None
    batch = queries.batch_record(order)
    cfg = settings()
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=LETTER, leftMargin=0.7 * inch, rightMargin=0.7 * inch,
                            topMargin=0.6 * inch, bottomMargin=0.6 * inch,
                            title=f"Compounding record {order.lot_number}", author=cfg.pharmacy_name)
    s = _styles(10)
    width = LETTER[0] - 1.4 * inch - 12
    story = [
        _p(cfg.pharmacy_name, s["title"]),
        _p(f"{cfg.pharmacy_address} · {cfg.pharmacy_phone}", s["small"]),
        Spacer(1, 8),
        _p(f"Compounding record · batch {order.lot_number}", s["big"]),
        Spacer(1, 6),
        _grid(_record_facts(view, cfg.timezone, batch), [width * 0.28, width * 0.72], s, header=False),
        Spacer(1, 10), _p("Ingredients", s["bold"]),
        _grid(_record_ingredients(view, batch), [width * 0.32, width * 0.16, width * 0.16, width * 0.16, width * 0.2], s),
        Spacer(1, 10), _p("Method and equipment (master formulation record)", s["bold"]),
        _p(formula.method, s["body"]),
        _p(f"Equipment: {formula.equipment or '—'}", s["body"]),
        Spacer(1, 10), _p("Quality", s["bold"]),
        _grid(_record_quality(view), [width * 0.28, width * 0.72], s, header=False),
        Spacer(1, 10), _p("People", s["bold"]),
        _grid(_record_people(view, cfg.timezone), [width * 0.2, width * 0.45, width * 0.35], s),
        Spacer(1, 18),
        _p("Reviewed by the pharmacist before release: signature ______________________  date ____________", s["body"]),
    ]
    if order.cap_note:
        story[6:6] = [Spacer(1, 4), _p(order.cap_note, s["small"])]
    doc.build(story)
    return buf.getvalue()
