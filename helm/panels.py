"""Grafana panel builders (grafana-foundation-sdk) shared by the dashboard's rows in helm/dashboards.py: Prometheus
queries and rates, threshold steps, time series and stat panels, label variables, and the grid's sizes."""

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

RATE = "$__rate_interval"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
BASE_STEP = -1e9  # value of the first threshold step (see steps())
WIDE, THIRD, QUARTER = 12, 8, 6
TALL, SHORT = 8, 4


def query(expr: str, legend: str, ref_id: str, *, heatmap: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range()
    # Grafana turns the cumulative `le` buckets of a "heatmap" query into the count of each bucket.
    return target.format(PromQueryFormat.HEATMAP) if heatmap else target


def rate(metric: str, selector: str, by: str = "") -> str:
    """A counter's per-second rate over the rate window, summed (``by`` those labels when given)."""
    total = f"sum by ({by}) " if by else "sum"
    return f"{total}(rate({metric}{{{selector}}}[{RATE}]))"


def quantiles(histogram: str, selector: str, label: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[Any]:
    """p50/p95/p99 (or ``qs``) of a Prometheus histogram, one query each."""
    return [
        query(
            f"histogram_quantile({q}, {rate(f'{histogram}_bucket', selector, 'le')})",
            f"{label} p{round(q * 100)}",
            f"{label}-p{round(q * 100)}",
        )
        for q in qs
    ]


def steps(base: str, *pairs: tuple[float, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: the ``base`` colour, then (value, colour) steps.

    Grafana writes the base step's value as null (-Infinity), which the 11.6 JSON schema refuses (it wants a
    number). Grafana takes the first step as the base whatever its value, so ``BASE_STEP``, below every value
    these panels show, keeps the file valid without changing what is drawn.
    """
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(BASE_STEP, base), *(Threshold(v, c) for v, c in pairs)])
    )


def panel_timeseries(  # noqa: PLR0913 - keyword-only panel options with defaults
    title: str,
    description: str,
    targets: list[Any],
    *,
    unit: str = "short",
    width: int = THIRD,
    stacked: bool = False,
    percent: bool = False,
    bars: bool = False,
    thresholds: dash.ThresholdsConfig | None = None,
    minimum: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .span(width)
        .height(TALL)
        .line_width(1)
        .fill_opacity(60 if bars else (25 if stacked else 10))
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stacked or percent:
        mode = common.StackingMode.PERCENT if percent else common.StackingMode.NORMAL
        panel = panel.stacking(common_builders.StackingConfig().mode(mode))
    if thresholds is not None:
        style = common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        panel = panel.thresholds(thresholds).thresholds_style(style)
    if minimum is not None:
        panel = panel.min(minimum)
    return panel


def panel_median_p95(
    title: str, description: str, selector: str, histograms: dict[str, str], *, unit: str
) -> timeseries.Panel:
    """A wide panel of the median and 95th percentile of Prometheus histograms (legend label: histogram)."""
    targets = [q for label, name in histograms.items() for q in quantiles(name, selector, label, (0.5, 0.95))]
    return panel_timeseries(title, description, targets, unit=unit, width=WIDE)


def panel_stat(  # noqa: PLR0913 - keyword-only panel options with defaults
    title: str,
    description: str,
    target: prometheus.Dataquery,
    *,
    unit: str = "short",
    thresholds: dash.ThresholdsConfig | None = None,
    mappings: list[Any] | None = None,
    width: int = QUARTER,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
        .unit(unit)
        .span(width)
        .height(SHORT)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds or steps("green"))
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def variable(name: str, label: str, expr: str) -> dash.QueryVariable:
    """A multi-value Prometheus label variable; "All" matches every value, including ones the query did not list."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(expr)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.NATURAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
