"""What every portal page must pass, whatever state a journey left it in: axe-core at WCAG 2.2 AA on the phone and
on desktop, targets of at least 44 × 44 px, no sideways scrolling at 200 % zoom (a 1280 px desktop zoomed to 200 %
lays out in 640 CSS px) nor at 320 px (the narrowest phone, WCAG 1.4.10 reflow). Screenshots of each state go to
artifacts/screenshots/ (look at them).
"""
from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe

from tests.browser.conftest import shot

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
ZOOMED = ({"width": 640, "height": 450}, {"width": 320, "height": 568})  # 200 % of a 1280 × 900 desktop; 320 px
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
MIN_TARGET = 44

_axe = Axe()

# Every control a finger or a pointer aims at. Radio buttons and check boxes count with their label (the `.choice`
# row, or the refill link's `label.tap-choice`: a tap on the words works). Links inside a sentence are WCAG's
# "inline" exception (their size is set by the line of text); every other link is a button-sized target.
_TARGETS_JS = """
(min) => {
  const bad = [];
  const seen = new Set();
  for (const el of document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')) {
    const style = getComputedStyle(el);
    if (el.closest('[hidden]') || style.visibility === 'hidden' || style.display === 'none') continue;
    let target = el;
    const row = el.closest('.choice, label.tap-choice');
    if (el.matches('input[type=radio], input[type=checkbox]') && row) target = row;
    if (seen.has(target)) continue;
    seen.add(target);
    const box = target.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right <= 0 || box.bottom <= 0) continue;  // the skip link, off-screen until focused
    if (el.tagName === 'A' && style.display === 'inline') continue;  // a link in a sentence
    if (box.width < min - 0.5 || box.height < min - 0.5) {
      bad.push(`${el.tagName.toLowerCase()} "${(el.innerText || el.value || el.name || el.id || '').trim().slice(0, 40)}"`
               + ` is ${Math.round(box.width)}×${Math.round(box.height)}`);
    }
  }
  return bad;
}
"""

_SCROLL_JS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"


def axe_violations(page: Any) -> list[str]:
    """axe-core's violations at WCAG 2.2 AA, one line each (rule, impact, the first elements).

    Only once the page has loaded: on a busy machine a page checked before its stylesheet applies has the
    browser's default (small) buttons, and axe rightly finds them too small."""
    page.wait_for_load_state("load")
    results = _axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]})
    lines = []
    for v in results.response["violations"]:
        where = "; ".join(" ".join(node["target"]) for node in v["nodes"][:3])
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} — {where}")
    return lines


def small_targets(page: Any) -> list[str]:
    return page.evaluate(_TARGETS_JS, MIN_TARGET)


def sideways_scroll(page: Any) -> tuple[int, int] | None:
    scroll, client = page.evaluate(_SCROLL_JS)
    return (scroll, client) if scroll > client + 1 else None


def check_page(page: Any, name: str, *, restore: dict[str, int] = PHONE) -> None:
    """The page as it is now, on the phone, on desktop and zoomed: axe, targets, reflow. Returns to `restore`."""
    problems: list[str] = []
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        problems += [f"{label}: axe: {v}" for v in axe_violations(page)]
        problems += [f"{label}: target: {t}" for t in small_targets(page)]
        if label == "phone":
            shot(page, f"portal-{name}")
    for size in ZOOMED:
        page.set_viewport_size(size)
        over = sideways_scroll(page)
        if over:
            problems.append(f"{size['width']} px wide: scrolls sideways ({over[0]} px of content)")
        if size["width"] == 640:
            shot(page, f"portal-{name}-zoom200")
    page.set_viewport_size(restore)
    assert not problems, f"{name}:\n" + "\n".join(problems)
