"""Shared pieces of the self-contained HTML reports: page shell, CSS, tables, plotly charts."""

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from thrifty.core.numbers import by_size

if TYPE_CHECKING:  # plotly is imported lazily, inside functions, to keep the CLI light
    from plotly.graph_objects import Figure

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
          "#e377c2", "#7f7f7f", "#bcbd22"]
NO_VALUES = "no values to plot"
CHART_HEIGHT = 340
# Modebar without the plotly logo; charts follow their container's width.
CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;font-weight:600}
.facts td:first-child{color:#555;padding-right:16px}
table.data{margin:8px 0;border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
table.data th,table.data td{border:1px solid #ddd;padding:3px 7px;text-align:right}
table.data th:first-child,table.data td:first-child{text-align:left;min-width:9em}
figure.plot{margin:16px 0;display:grid;grid-template-columns:minmax(0,1fr);gap:8px 24px}
figure.plot.multi{grid-template-columns:repeat(auto-fill,minmax(460px,1fr))}
.row{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));column-gap:32px}
figure.plot figcaption,.caption{grid-column:1/-1;font-weight:600;font-size:15px;margin:16px 0 0}
.chart{min-width:0} .note{grid-column:1/-1;color:#666;font-style:italic}
footer{margin-top:40px;color:#777;font-size:12px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def known(value: object) -> bool:
    """A number that can be drawn (None, NaN and infinity cannot)."""
    return isinstance(value, int | float) and math.isfinite(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="data"><tr>{head}</tr>{body}</table>'


def page(title: str, body: str) -> str:
    """One HTML document: `title` is escaped here, `body` is HTML already."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


class Plots:
    """Turns figures into <div>s in page order: the first carries plotly.js inline (so the
    page works with no network) and later ones reuse it."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: "Figure") -> str:
        self.count += 1
        return ('<div class="chart">' + fig.to_html(
            full_html=False, include_plotlyjs=self.count == 1, config=CONFIG,
            div_id=f"plot-{self.count}") + "</div>")  # fixed ids: the same input, the same page


def figure(plots: Plots, title: str, charts: list["Figure"], note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    divs = "".join(plots.div(chart) for chart in charts)
    # Grid columns of fixed width: a chart is sized once, when its script runs, so its column
    # must not change width as later charts arrive.
    kind = "plot multi" if len(charts) > 1 else "plot"
    return (f'<figure class="{kind}"><figcaption>{esc(title)}</figcaption>{divs}{note_html}'
            "</figure>")


def no_figure(title: str, note: str) -> str:
    """What stands in for a figure that has nothing to draw."""
    return f'<p class="caption">{esc(title)}</p><p class="note">{esc(note)}</p>'


def new_chart(title: str, x_label: str, y_label: str, height: int = CHART_HEIGHT,
              hovermode: str = "x unified") -> "Figure":
    """An empty plotly figure in the reports' style; titles are escaped (plotly reads HTML)."""
    import plotly.graph_objects as go

    axis = {"rangemode": "tozero", "showline": True, "linecolor": "#555", "ticks": "outside"}
    return go.Figure(layout={
        "title": {"text": esc(title), "font": {"size": 14}}, "template": "plotly_white",
        "height": height, "margin": {"l": 64, "r": 20, "t": 72, "b": 52},
        "colorway": COLORS, "hovermode": hovermode, "font": {"size": 12},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": {**axis, "title": {"text": esc(x_label)}},
        "yaxis": {**axis, "title": {"text": esc(y_label)}}})


def no_values(fig: "Figure") -> "Figure":
    fig.add_annotation(text=NO_VALUES, showarrow=False, xref="paper", yref="paper",
                       x=0.5, y=0.5, font={"size": 14, "color": "#666"})
    return fig


@dataclass
class Line:
    name: str
    points: list[tuple[float, float | None]]  # (x, y); a missing y breaks the line
    color: str
    dash: str = "solid"  # plotly dash: solid, dash, dot, dashdot, longdash


def line_chart(title: str, lines: list[Line], x_label: str, y_label: str,
               x_ticks: list[float] | None = None,
               x_marker: tuple[float, str] | None = None) -> "Figure":
    """Lines with a marker on every known value; x_ticks pins the ticks (integer loads);
    x_marker draws a labelled dashed vertical line."""
    import plotly.graph_objects as go

    fig = new_chart(title, x_label, y_label)
    if not any(known(y) for line in lines for _, y in line.points):
        return no_values(fig)
    for line in lines:
        fig.add_trace(go.Scatter(
            name=esc(line.name), x=[x for x, _ in line.points],
            y=[y if known(y) else None for _, y in line.points], mode="lines+markers",
            line={"color": line.color, "dash": line.dash, "width": 2}, connectgaps=False))
    if x_ticks:
        fig.update_xaxes(tickmode="array", tickvals=x_ticks)
    if x_marker is not None:
        fig.add_vline(x=x_marker[0], line={"color": "#888", "dash": "dash", "width": 1},
                      annotation_text=esc(x_marker[1]), annotation_position="top right")
    return fig


def bar_chart(title: str, groups: list[str], series: list[tuple[str, list[float | None]]],
              y_label: str) -> "Figure":
    """Grouped vertical bars: one group per category, one coloured bar per series in it;
    a missing value reads n/a."""
    import plotly.graph_objects as go

    fig = new_chart(title, "", y_label, hovermode="closest")
    for s, (name, values) in enumerate(series):
        texts = [by_size(v) if known(v) else "n/a" for v in values]
        fig.add_trace(go.Bar(
            name=esc(name), x=[esc(g) for g in groups], y=[v if known(v) else 0 for v in values],
            text=texts, textposition="outside", marker_color=COLORS[s % len(COLORS)],
            hovertemplate=f"{esc(name)} %{{x}}: %{{text}}<extra></extra>"))
    fig.update_layout(barmode="group", bargap=0.3)
    fig.update_xaxes(type="category", ticks="")
    return fig


def stacked_bar(title: str, segments: list[tuple[str, float]], unit: str,
                total: tuple[str, float] | None = None) -> "Figure":
    """One horizontal bar split into labelled segments; `total` (label, value) extends the
    axis to a capacity and draws it as a dashed limit."""
    import plotly.graph_objects as go

    fig = new_chart(title, unit.strip(), "", height=230, hovermode="closest")
    for i, (name, value) in enumerate(segments):
        fig.add_trace(go.Bar(
            name=esc(name), x=[value], y=[""], orientation="h", text=[by_size(value, unit)],
            textposition="inside", insidetextanchor="middle",
            marker_color=COLORS[i % len(COLORS)],
            hovertemplate=f"{esc(name)}: {esc(by_size(value, unit))}<extra></extra>"))
    fig.update_layout(barmode="stack", margin={"t": 90, "l": 20}, legend_traceorder="normal")
    fig.update_yaxes(showline=False, ticks="")
    if total:
        fig.add_vline(x=total[1], line={"color": "#333", "dash": "dash", "width": 1.5},
                      annotation_text=esc(total[0]), annotation_position="top left")
    return fig


@dataclass
class Points:
    """One legend entry of a scatter chart: its points, with a hover text for each."""
    name: str
    color: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    hover: list[str] = field(default_factory=list)  # plotly text: escape, <br> for lines
    ringed: list[bool] = field(default_factory=list)  # drawn with a black ring


def scatter_chart(title: str, groups: list[Points], x_label: str, y_label: str,
                  height: int = 420) -> "Figure":
    """Points with no text on the chart: the legend names the groups, hover names a point."""
    import plotly.graph_objects as go

    fig = new_chart(title, x_label, y_label, height=height, hovermode="closest")
    for group in groups:
        fig.add_trace(go.Scatter(
            name=esc(group.name), x=group.x, y=group.y, mode="markers",
            hovertext=group.hover, hovertemplate="%{hovertext}<extra></extra>",
            marker={"color": group.color, "size": 10, "opacity": 0.85,
                    "line": {"color": "#000", "width": [2 if r else 0 for r in group.ringed]}}))
    return fig
