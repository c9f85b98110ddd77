"""plotly.js figures (plain data and layout) for the dashboard's numbers; static/analytics.js draws them."""

LAYOUT = {"margin": {"l": 48, "r": 16, "t": 8, "b": 40}, "height": 300, "legend": {"orientation": "h"}}
# Heights in pixels of one bar of a top list and of the axis below it. A list of two bars is drawn
# two bars high instead of stretching them over the full chart height.
BAR_LIST_ROW_HEIGHT = 28
BAR_LIST_AXIS_HEIGHT = 60


# Counts never go below zero, so a chart of zeros starts at 0 instead of centring it. Axis labels
# such as dates get the margin they need instead of being cut off.
VALUE_AXIS = {"rangemode": "tozero", "automargin": True}
CATEGORY_AXIS = {"automargin": True}


def _layout(**extra):
    """Return the shared layout with `extra` on top; axis settings are merged with the defaults."""
    layout = {**LAYOUT, "xaxis": dict(CATEGORY_AXIS), "yaxis": dict(VALUE_AXIS)}
    for name, value in extra.items():
        if name in ("xaxis", "yaxis", "yaxis2") and isinstance(value, dict):
            layout[name] = {**layout.get(name, VALUE_AXIS), **value}
        else:
            layout[name] = value
    return layout


def _bar_list(items, label_key, title):
    items = list(reversed(items))
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [item["count"] for item in items],
                "y": [str(item[label_key]) or "(none)" for item in items],
                "name": title,
            }
        ],
        "layout": _layout(
            margin={"l": 180, "r": 16, "t": 8, "b": 40},
            yaxis={"automargin": True},
            height=min(LAYOUT["height"], BAR_LIST_AXIS_HEIGHT + BAR_LIST_ROW_HEIGHT * max(len(items), 1)),
        ),
    }


def build_event_figures(figures):
    """Build the figures drawn from the rollups, which can be cached with them until the next ingest.

    `figures` is the dict of event figures that `service` caches (activity, heatmap, top lists, sessions).
    """
    activity = figures["activity"]
    heatmap = figures["heatmap"]
    sessions = figures["sessions"]
    return {
        "activity": {
            "data": [
                {"type": "bar", "name": series["type"], "x": activity["periods"], "y": series["counts"]}
                for series in activity["series"]
            ],
            "layout": _layout(barmode="stack", xaxis={"type": "category"}),
        },
        "heatmap": {
            "data": [
                {
                    "type": "heatmap",
                    "x": [f"{hour:02d}:00" for hour in heatmap["hours"]],
                    "y": heatmap["weekdays"],
                    "z": heatmap["counts"],
                    "colorscale": "Blues",
                }
            ],
            "layout": _layout(yaxis={"autorange": "reversed"}),
        },
        "top_files": _bar_list(figures["top_files"], "path", "events"),
        "top_file_types": _bar_list(figures["top_file_types"], "name", "events"),
        "top_tools": _bar_list(figures["top_tools"], "name", "events"),
        "sessions": {
            "data": [
                {"type": "bar", "name": "sessions", "x": sessions["periods"], "y": sessions["counts"]},
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": "average minutes",
                    "x": sessions["periods"],
                    "y": sessions["average_minutes"],
                    "yaxis": "y2",
                },
            ],
            "layout": _layout(
                xaxis={"type": "category"}, yaxis2={"overlaying": "y", "side": "right", "title": {"text": "minutes"}}
            ),
        },
    }


def build_live_figures(runs, suggestions):
    """Build the figures of workflow runs and suggestions, which change without an ingest."""
    figures = {
        "suggestions": {
            "data": [
                {
                    "type": "bar",
                    "x": ["accepted", "dismissed", "open now"],
                    "y": [suggestions["accepted"], suggestions["dismissed"], suggestions["open"]],
                }
            ],
            "layout": _layout(),
        },
    }
    if runs["available"]:
        figures["workflow_runs"] = {
            "data": [
                {"type": "bar", "name": "succeeded", "x": runs["periods"], "y": runs["succeeded"]},
                {"type": "bar", "name": "other", "x": runs["periods"], "y": runs["other"]},
            ],
            "layout": _layout(barmode="stack", xaxis={"type": "category"}),
        }
    return figures


def build_figures(dashboard):
    """Build every figure of a dashboard."""
    return {
        **build_event_figures(dashboard),
        **build_live_figures(dashboard["workflow_runs"], dashboard["suggestions"]),
    }
