"""Line charts of the metric series as geometry for inline SVG (no script, no library)."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.metrics.summary import Series

# The kinds the overview draws, in legend order, with their CSS class.
KINDS: tuple[tuple[str, str], ...] = (
    ("sent", "Sends"),
    ("delivered", "Deliveries"),
    ("bounced", "Bounces"),
    ("complained", "Complaints"),
    ("failed", "Failures"),
)
WIDTH, HEIGHT, PAD = 600, 160, 4


@dataclass(frozen=True, slots=True)
class Line:
    kind: str
    label: str
    points: str  # the SVG polyline's `points`
    total: int


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    width: int
    height: int
    peak: int
    lines: list[Line]
    first: str
    last: str
    rows: list[tuple[str, list[int]]]  # the same numbers as a table


def line_chart(series: Series, title: str, label_format: str) -> Chart:
    buckets = series.buckets
    peak = max((b.counts[k] for b in buckets for k, _ in KINDS), default=0)
    scale = (HEIGHT - 2 * PAD) / peak if peak else 0.0
    step = (WIDTH - 2 * PAD) / max(1, len(buckets) - 1)
    lines = []
    for kind, label in KINDS:
        points = " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - b.counts[kind] * scale:.1f}"
            for i, b in enumerate(buckets)
        )
        lines.append(Line(kind, label, points, series.totals[kind]))
    rows = [
        (b.start.strftime(label_format), [b.counts[k] for k, _ in KINDS])
        for b in buckets
        if any(b.counts[k] for k, _ in KINDS)
    ]
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        peak=peak,
        lines=lines,
        first=buckets[0].start.strftime(label_format) if buckets else "",
        last=buckets[-1].start.strftime(label_format) if buckets else "",
        rows=rows,
    )
