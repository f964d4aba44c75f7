"""The plots are well-formed SVG: one circle per finite point, axes with their ranges, escaped
labels, and an honest "no data yet" when there is nothing to draw."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.dashboard.svg import PALETTE, line_plot

NS = {"s": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _circles(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//s:circle", NS)


def test_one_circle_per_finite_point_and_one_line_per_series_of_two() -> None:
    root = _parse(
        line_plot(
            "loss",
            "losses",
            {"uid 1": [(20, 3.0), (40, 2.0), (60, math.nan)], "uid 2": [(20, 5.0)]},
        )
    )
    circles = _circles(root)
    assert len(circles) == 3  # the NaN is dropped
    assert [c.get("data-series") for c in circles] == ["uid 1", "uid 1", "uid 2"]
    assert len(root.findall(".//s:polyline", NS)) == 1  # uid 2 has one point: no line
    assert {c.get("fill") for c in circles} == {PALETTE[0], PALETTE[1]}
    assert root.get("id") == "loss"


def test_points_span_the_axes_from_min_to_max() -> None:
    # x 20…40 maps onto the plot's left (56) … right (520 − 110 = 410) edge; y 2…5 onto
    # bottom (240 − 34 = 206) … top (26): (20, 5) is the top left corner, (40, 2) the bottom right.
    root = _parse(line_plot("p", "t", {"a": [(20, 5.0), (40, 2.0)]}, width=520, height=240))
    (x0, y0), (x1, y1) = [(float(c.get("cx")), float(c.get("cy"))) for c in _circles(root)]
    assert (x0, y0) == (56.0, 26.0) and (x1, y1) == (410.0, 206.0)
    ticks = [t.text for t in root.findall(".//s:text[@class='tick']", NS)]
    assert ticks[:4] == ["20", "40", "2", "5"]
    assert len(root.findall(".//s:line[@class='axis']", NS)) == 2


def test_a_single_value_gets_a_range_instead_of_a_division_by_zero() -> None:
    root = _parse(line_plot("p", "t", {"a": [(7, 1.5)]}))
    (c,) = _circles(root)
    assert 0 < float(c.get("cx")) < 520 and 0 < float(c.get("cy")) < 240


def test_no_data_draws_no_points_and_says_so() -> None:
    for series in ({}, {"a": []}, {"a": [(math.inf, 1.0), (1.0, math.nan)]}):
        root = _parse(line_plot("empty", "nothing", series))
        assert _circles(root) == []
        assert any(t.text == "no data yet" for t in root.iter(f"{{{NS['s']}}}text"))


def test_labels_are_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    svg = line_plot('id"><script>', evil, {evil: [(1, 1.0), (2, 2.0)]}, y_label=evil)
    assert "<script>" not in svg
    root = _parse(svg)  # still well-formed
    assert root.find(".//s:text[@class='title']", NS).text == evil
    assert _circles(root)[0].get("data-series") == evil


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.lists(st.tuples(st.floats(), st.floats()), max_size=6),
        max_size=4,
    )
)
def test_any_series_gives_well_formed_svg_with_a_circle_per_finite_point(series) -> None:
    root = _parse(line_plot("fuzz", "fuzz", series))
    finite = sum(
        1 for pts in series.values() for x, y in pts if math.isfinite(x) and math.isfinite(y)
    )
    circles = _circles(root)
    assert len(circles) == finite
    assert all(
        math.isfinite(float(c.get("cx"))) and math.isfinite(float(c.get("cy"))) for c in circles
    )
