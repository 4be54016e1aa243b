"""Server-rendered SVG charts: no script, no CDN (the CSP allows neither), every text escaped.

Coordinates are computed in integers (pixels), so amounts stay exact all the way to the picture.
Colours come from static/css/app.css (`.chart .bar`); bars that must stand out carry their own
class and a fill attribute, which that rule does not override.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from pharmacy.billing.reports import MonthRevenue, PatientMonthly
from pharmacy.billing.rules import format_cents

STOP = "#b3261e"
MUTED = "#9aa7b5"


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar
    value: int
    tooltip: str  # the <title> a pointer or a screen reader finds
    css: str = "bar"
    fill: str | None = None


def nice_step(span: int, ticks: int = 4) -> int:
    """A round tick step (1, 2 or 5 × a power of ten) so that about `ticks` steps cover `span`."""
    if span <= 0:
        return 1
    raw = -(-span // ticks)  # ceiling division
    power = 1
    while power * 10 <= raw:
        power *= 10
    for multiple in (1, 2, 5, 10):
        if multiple * power >= raw:
            return multiple * power
    return 10 * power  # pragma: no cover - the loop always returns


LABEL_CHAR_PX = 8  # the axis labels' widest character at the chart's font size (13 px): digits, "$", ","


def bar_chart(bars: Sequence[Bar], *, chart_id: str, title: str, description: str,
              axis_label: Callable[[int], str], width: int = 960, height: int = 300) -> Markup:
    """A vertical bar chart with a zero line, a few labelled grid lines and one <title> per bar."""
    values = [b.value for b in bars] or [0]
    highest, lowest = max(max(values), 0), min(min(values), 0)
    step = nice_step(highest - lowest)
    high = -(-highest // step) * step  # round up to a tick
    low = (lowest // step) * step  # round down to a tick (0 unless a value is negative)
    if high == low:
        high = low + step
    span = high - low
    ticks = [(tick, axis_label(tick)) for tick in range(low, high + 1, step)]
    # Room for the widest axis label (a chain's "$8,000,000" was cut at the chart's left edge).
    left = max(72, LABEL_CHAR_PX * max(len(label) for _, label in ticks) + 12)
    right, top, bottom = 12, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(value: int) -> int:
        return top + (high - value) * plot_h // span

    tid, did = escape(f"{chart_id}-title"), escape(f"{chart_id}-desc")
    # Every text is escaped (`escape`) where it is written: labels and tooltips can never become markup. Numbers are
    # the integers computed above. f-strings rather than Markup.format, whose string.Formatter was a third of the
    # money page's rendering (three charts of some 40 parts each).
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-labelledby="{tid} {did}" id="{escape(chart_id)}"><title id="{tid}">{escape(title)}</title>'
           f'<desc id="{did}">{escape(description)}</desc><g class="grid">']
    for tick, label in ticks:
        ty = y(tick)
        sw, so = (2, "1") if tick == 0 else (1, "0.35")
        out.append(f'<line class="axis" x1="{left}" y1="{ty}" x2="{width - right}" y2="{ty}" stroke="{MUTED}" '
                   f'stroke-width="{sw}" stroke-opacity="{so}"/><text x="{left - 6}" y="{ty + 4}" text-anchor="end">'
                   f'{escape(label)}</text>')
    out.append('</g><g class="bars">')
    n = max(len(bars), 1)
    slot = plot_w // n
    bar_w = max(slot * 7 // 10, 2)
    zero = y(0)
    label_y = height - bottom + 16
    for i, bar in enumerate(bars):
        x = left + i * slot + (slot - bar_w) // 2
        top_y, bottom_y = (y(bar.value), zero) if bar.value >= 0 else (zero, y(bar.value))
        fill = f' fill="{escape(bar.fill)}"' if bar.fill else ""
        out.append(f'<rect class="{escape(bar.css)}" x="{x}" y="{top_y}" width="{bar_w}" '
                   f'height="{max(bottom_y - top_y, 0)}"{fill} data-value="{int(bar.value)}"><title>{escape(bar.tooltip)}'
                   f'</title></rect><text class="label" x="{x + bar_w // 2}" y="{label_y}" text-anchor="middle">'
                   f'{escape(bar.label)}</text>')
    out.append("</g></svg>")
    return Markup("".join(out))  # noqa: S704 - every text part was escaped where it was written (above)


def _money_axis(cents: int) -> str:
    """Axis labels in whole dollars ("$1,200"), exact: ticks are round numbers of cents."""
    text = format_cents(cents)
    return text[:-3] if text.endswith(".00") else text


def revenue_chart(months: Sequence[MonthRevenue], *, chart_id: str = "revenue-chart") -> Markup:
    """Net revenue (payments − refunds) per local month; a month with net refunds is drawn below zero."""
    bars = []
    for i, m in enumerate(months):
        label = m.label.split(" ")[0] if i and not m.month.endswith("-01") else m.label
        tip = (f"{m.label}: {format_cents(m.net_cents)} net "
               f"(paid {format_cents(m.paid_cents)}, refunded {format_cents(m.refunded_cents)})")
        bars.append(Bar(label=label, value=m.net_cents, tooltip=tip,
                        css="bar" if m.net_cents >= 0 else "bar-negative", fill=None if m.net_cents >= 0 else STOP))
    first, last = (months[0].label, months[-1].label) if months else ("", "")
    total = sum(m.net_cents for m in months)
    return bar_chart(bars, chart_id=chart_id, title="Revenue by month (payments minus refunds)",
                     description=f"{len(months)} months, {first} to {last}: {format_cents(total)} in all.",
                     axis_label=_money_axis)


def adherence_chart(distribution: Sequence[int], threshold_percent: int, *, chart_id: str = "adherence-chart") -> Markup:
    """Patients per 10-point PDC band; bands entirely below the threshold are drawn in the warning colour."""
    bars = []
    for i, count in enumerate(distribution):
        lo, hi = i * 10, (i * 10 + 9 if i < 9 else 100)
        below = hi < threshold_percent
        people = "patient" if count == 1 else "patients"
        bars.append(Bar(label=f"{lo}–{hi}%", value=count, tooltip=f"PDC {lo}–{hi}%: {count} {people}",
                        css="bar-low" if below else "bar", fill=STOP if below else None))
    total = sum(distribution)
    return bar_chart(bars, chart_id=chart_id, title="Adherence: patients by proportion of days covered",
                     description=f"{total} patients measured; bands below {threshold_percent}% are highlighted.",
                     axis_label=str)


def monthly_cost_chart(rows: Sequence[PatientMonthly], average_cents: int, *, band_max_cents: int,
                       chart_id: str = "monthly-cost-chart") -> Markup:
    """The highest monthly costs per patient (price × 30 ÷ days), those above the band's top drawn in the warning
    colour; the label under each bar is the patient's last name (or "#12" for readers who see numbers only)."""
    bars = []
    for r in rows:
        cents = r.monthly_equivalent_cents
        short = r.name.split(",")[0].replace("Patient ", "")[:12]
        above = cents > band_max_cents
        bars.append(Bar(label=short, value=cents, tooltip=f"{r.name}: {format_cents(cents)} a month over {r.fills} "
                        f"fill{'s' if r.fills != 1 else ''}", css="bar-high" if above else "bar",
                        fill=STOP if above else None))
    return bar_chart(bars, chart_id=chart_id, title="Highest monthly cost per patient",
                     description=f"{len(rows)} patients with the highest monthly cost; the average is "
                                 f"{format_cents(average_cents)} a month; above {format_cents(band_max_cents)} "
                                 "is highlighted.", axis_label=_money_axis)
