"""The SVG bar chart: whatever text it is given (a patient's name under a bar, a tooltip), the picture is well-formed
XML whose texts read back exactly as given — never markup — and each bar carries its exact value."""
from __future__ import annotations

from defusedxml import ElementTree
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.billing.charts import Bar, bar_chart

SVG = "{http://www.w3.org/2000/svg}"
# XML cannot hold control characters or U+FFFE/U+FFFF (unassigned, Cn), and its parser reads "\r" as "\n".
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), max_size=30)


@given(st.lists(st.tuples(TEXT, st.integers(-10**9, 10**9), TEXT), max_size=14), TEXT, TEXT)
def test_every_text_is_escaped_and_every_value_exact(bars: list[tuple[str, int, str]], title: str, desc: str) -> None:
    svg = bar_chart([Bar(label=label, value=value, tooltip=tip) for label, value, tip in bars], chart_id="c<1>",
                    title=title, description=desc, axis_label=lambda cents: f"<${cents}&>")
    root = ElementTree.fromstring(str(svg))
    assert root.get("id") == "c<1>"
    assert (root.find(f"{SVG}title").text or "") == title
    assert (root.find(f"{SVG}desc").text or "") == desc
    rects = root.findall(f"{SVG}g/{SVG}rect")
    assert [(int(r.get("data-value")), r.find(f"{SVG}title").text or "") for r in rects] == [(v, t) for _, v, t in bars]
    labels = [t.text or "" for t in root.findall(f"{SVG}g/{SVG}text[@class='label']")]
    assert labels == [label for label, _, _ in bars]
    assert all(t.text.startswith("<$") for t in root.findall(f"{SVG}g/{SVG}text[@text-anchor='end']"))


def test_a_name_that_looks_like_markup_stays_text() -> None:
    svg = str(bar_chart([Bar(label="<script>x</script>", value=5, tooltip='O"Brien & <b>', fill='"/><g')],
                        chart_id="c", title="t", description="d", axis_label=str))
    assert "<script>" not in svg and "<b>" not in svg and '"/><g' not in svg
    assert "&lt;script&gt;x&lt;/script&gt;" in svg and "O&#34;Brien &amp; &lt;b&gt;" in svg
