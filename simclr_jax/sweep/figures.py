"""The sweep report's figures (report.py), in the SimCLR paper's layouts.

Each function takes the report's rows and returns a Plot: a matplotlib
Figure, or None and the reason the sweep has no data for it:

  accuracy_vs_epochs     accuracy against epochs (or train_steps), a subplot
                         per accuracy (kNN, linear), a line per batch size
                         (the paper's Figure 9); when the points vary epochs
  accuracy_vs_params     accuracy against backbone parameters (log axis), a
                         line per depth, points labelled by width multiplier
                         (Figure 7); when they vary model.depth or width
  knn_vs_hours           the kNN monitor against wall-clock hours since a
                         point's first record, a line per point, the final
                         kNN a star at its end; when any point logged it
  throughput_vs_devices  images/s against devices, a line per scaling kind,
                         ideal linear scaling from the smallest count dashed;
                         when the points differ in device count

Points a figure leaves out (not done, or without the value it needs) are
named in a note at its foot and in Plot.left_out, which report.run prints:
none disappears without a trace.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simclr_jax.plots import _MARKERS
from simclr_jax.plots import _save
from simclr_jax.sweep import layout

if TYPE_CHECKING:
  from simclr_jax.sweep.report import Row

_MONITOR = "monitor/knn_top1"  # old runs' monitor/knn_accuracy is renamed


@dataclasses.dataclass
class Plot:
  """One figure of the report: `figure` None means skipped, for `why`."""

  name: str  # file name without .png
  figure: Figure | None = None
  why: str = ""
  left_out: list[str] = dataclasses.field(default_factory=list)


def _order(value: Any) -> tuple:
  """Sorts numbers by value (batch 1024 after 128), then anything else."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return (0, float(value), "")
  return (1, 0.0, str(value))


def _varies(rows: Sequence[Row], key: str) -> bool:
  """Whether the points set `key` to more than one value."""
  values = {repr(r.setting(key)) for r in rows if r.setting(key) is not None}
  return len(values) > 1


def _new(n_axes: int, note: Sequence[str]) -> tuple[Figure, list]:
  """A figure with `n_axes` side by side, `note` (left-out points) below,
  the figure taller by what the note needs."""
  width, text = 5.5 * n_axes, "not shown: " + ", ".join(note)
  # About 13 characters of 7 pt text per inch, 0.125 inch per line.
  lines = math.ceil(len(text) / (13 * width)) if note else 0
  below = 0.15 + 0.125 * lines if note else 0.0
  fig = Figure(figsize=(width, 4.6 + below), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  if note:
    fig.text(0.01, 0.01, text, fontsize=7, wrap=True, va="bottom")
    bottom = below / fig.get_figheight()
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
  return fig, [fig.add_subplot(1, n_axes, i + 1) for i in range(n_axes)]


def _left_out(
  rows: Sequence[Row], has: Callable[[Row], bool], why: str
) -> list[str]:
  """Names of the points a figure does not draw, with why."""
  out = []
  for r in rows:
    if r.status != layout.DONE:
      out.append(f"{r.point} ({r.status})")
    elif not has(r):
      out.append(f"{r.point} ({why})")
  return out


def _accuracy_axes(rows: Sequence[Row]) -> list[tuple[str, str]]:
  """(column, axis label) of each accuracy some point has."""
  knn = rows[0].knn_name.replace("knn_k", "kNN (k=").replace("_top1", ")")
  wanted = (("knn_top1", knn), ("linear_top1", "linear"))
  return [
    (key, label)
    for key, label in wanted
    if any(
      r.status == layout.DONE and r.values.get(key) is not None for r in rows
    )
  ]


def _series_plot(
  name: str,
  rows: Sequence[Row],
  x: Callable[[Row], Any],
  series: Callable[[Row], Any],
  xlabel: str,
  label: Callable[[Any], str],
) -> Plot:
  """A subplot per accuracy against x, a line per series value."""
  metrics = _accuracy_axes(rows)
  if not metrics:
    return Plot(name, why="no finished point has a kNN or linear accuracy")
  left_out = []
  for r in rows:
    lacks = [] if x(r) is not None else [xlabel]
    lacks += [k for k, _ in metrics if r.values.get(k) is None]
    if r.status != layout.DONE:
      left_out.append(f"{r.point} ({r.status})")
    elif lacks:
      left_out.append(f"{r.point} (no {', '.join(lacks)})")
  plot = Plot(name, left_out=left_out)
  plot.figure, axes = _new(len(metrics), plot.left_out)
  for ax, (key, title) in zip(axes, metrics):
    groups = collections.defaultdict(list)
    for r in rows:
      if r.status == layout.DONE and None not in (r.values.get(key), x(r)):
        groups[series(r)].append((x(r), 100 * r.values[key], r))
    for i, value in enumerate(sorted(groups, key=_order)):
      points = sorted(groups[value], key=lambda p: p[0])
      ax.plot(
        [p[0] for p in points],
        [p[1] for p in points],
        marker=_MARKERS[i % len(_MARKERS)],
        label=label(value),
      )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{title} top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  return plot


def accuracy_vs_epochs(rows: Sequence[Row]) -> Plot:
  """The paper's Figure 9: accuracy vs epochs, a line per batch size."""
  name = "accuracy_vs_epochs"
  key = next((k for k in ("epochs", "train_steps") if _varies(rows, k)), "")
  if not key:
    return Plot(name, why="the points do not vary epochs or train_steps")
  plot = _series_plot(
    name,
    rows,
    lambda r: r.setting(key),
    lambda r: r.setting("batch_size"),
    key.replace("_", " "),
    lambda b: f"batch {b}",
  )
  if plot.figure is not None:
    plot.figure.suptitle(f"Accuracy vs {key.replace('_', ' ')}, by batch size")
    for ax in plot.figure.axes:
      ticks = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
      ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
  return plot


def accuracy_vs_params(rows: Sequence[Row]) -> Plot:
  """The paper's Figure 7: accuracy vs backbone parameters, a line per
  depth, each point labelled with its width multiplier."""
  name = "accuracy_vs_params"
  if not (
    _varies(rows, "model.depth") or _varies(rows, "model.width_multiplier")
  ):
    why = "the points do not vary model.depth or model.width_multiplier"
    return Plot(name, why=why)
  params = lambda r: r.values.get("backbone_params")
  plot = _series_plot(
    name,
    rows,
    params,
    lambda r: r.setting("model.depth"),
    "backbone parameters",
    lambda d: f"ResNet-{d}",
  )
  if plot.figure is None:
    return plot
  plot.figure.suptitle(
    "Accuracy vs backbone parameters, by depth (labels: width)"
  )
  for ax, (key, _) in zip(plot.figure.axes, _accuracy_axes(rows)):
    ax.set_xscale("log")
    for r in rows:
      if (
        r.status == layout.DONE and params(r) and r.values.get(key) is not None
      ):
        width = r.setting("model.width_multiplier")
        text = "?" if width is None else f"{width:g}x"
        xy = (params(r), 100 * r.values[key])
        ax.annotate(text, xy, (4, 4), textcoords="offset points", fontsize=8)
  return plot


def _monitor_curve(r: Row) -> tuple[list[float], list[float], float]:
  """(hours since the first record, kNN monitor %, hours at the last
  record) of a point."""
  times = [rec["time"] for rec in r.records if "time" in rec]
  if not times:
    return [], [], 0.0
  t0 = min(times)
  points = [
    ((rec["time"] - t0) / 3600, 100 * rec[_MONITOR])
    for rec in r.records
    if "time" in rec and _MONITOR in rec
  ]
  return (
    [p[0] for p in points],
    [p[1] for p in points],
    (max(times) - t0) / 3600,
  )


def knn_vs_hours(rows: Sequence[Row]) -> Plot:
  """kNN-monitor accuracy vs wall-clock hours, a line per point; a done
  point's end-of-run kNN is a star at its last record."""
  name = "knn_vs_hours"
  curves = {r.point: _monitor_curve(r) for r in rows}
  if not any(c[0] for c in curves.values()):
    why = "no point logged monitor/knn_top1 (eval.monitor_every_epochs > 0)"
    return Plot(name, why=why)
  has = lambda r: bool(curves[r.point][0])
  left_out = [
    f"{r.point} ({r.status})"
    if r.status == layout.MISSING
    else f"{r.point} ({r.status}, no monitor)"  # fmt: skip
    for r in rows
    if not has(r)
  ]
  plot = Plot(name, left_out=left_out)
  plot.figure, (ax,) = _new(1, left_out)
  final_label = rows[0].knn_name
  for r in filter(has, rows):
    hours, knn, end = curves[r.point]
    done = r.status == layout.DONE
    label = r.point if done else f"{r.point} ({r.status})"
    line = ax.plot(
      hours, knn, marker=".", ls="-" if done else ":", label=label
    )[0]
    if done and r.values.get("knn_top1") is not None:
      ax.plot(
        [end], [100 * r.values["knn_top1"]], marker="*", markersize=11,
        ls="none", color=line.get_color(),
        label=f"end of run: {final_label}" if final_label else None,
      )  # fmt: skip
      final_label = ""  # one legend entry for all stars
  ax.set_xlabel("wall-clock hours since the point's first record")
  ax.set_ylabel("kNN monitor top-1 (%)")
  ax.set_title("kNN monitor vs wall-clock time")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  return plot


def throughput_vs_devices(rows: Sequence[Row]) -> Plot:
  """images/s vs devices, a line per scaling kind ("run": a sweep's
  points), ideal linear scaling from its smallest device count dashed."""
  name = "throughput_vs_devices"
  has = lambda r: bool(
    r.status == layout.DONE
    and r.values.get("devices")
    and r.values.get("images_per_sec")
  )
  counts = {r.values["devices"] for r in rows if has(r)}
  if len(counts) < 2:
    why = "the finished points do not differ in device count"
    return Plot(name, why=why)
  left_out = _left_out(rows, has, "no devices or images/s")
  plot = Plot(name, left_out=left_out)
  plot.figure, (ax,) = _new(1, left_out)
  groups = collections.defaultdict(list)
  for r in filter(has, rows):
    groups[r.values.get("scaling") or "run"].append(r)
  for i, kind in enumerate(sorted(groups)):
    points = sorted(groups[kind], key=lambda r: r.values["devices"])
    xs = [r.values["devices"] for r in points]
    ys = [r.values["images_per_sec"] for r in points]
    marker = _MARKERS[i % len(_MARKERS)]
    line = ax.plot(xs, ys, marker=marker, label=f"{kind} scaling")[0]
    ideal = [ys[0] * n / xs[0] for n in xs]
    ax.plot(xs, ideal, ls="--", color=line.get_color(), label=f"{kind}: ideal")
    for r, y in zip(points, ys):
      if r.values.get("scaling_efficiency") is not None:
        text = f"{100 * r.values['scaling_efficiency']:.0f}%"
        ax.annotate(text, (r.values["devices"], y), (4, -10),
                    textcoords="offset points", fontsize=7)  # fmt: skip
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(counts), [str(n) for n in sorted(counts)])
  ax.set_ylim(bottom=0)
  ax.set_xlabel("devices")
  ax.set_ylabel("images / second")
  ax.set_title("Throughput vs devices (labels: scaling efficiency)")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  return plot


FIGURES = (
  accuracy_vs_epochs,
  accuracy_vs_params,
  knn_vs_hours,
  throughput_vs_devices,
)


def draw_all(rows: Sequence[Row]) -> list[Plot]:
  """Every figure of FIGURES, drawn or skipped."""
  if not rows:
    why = "the sweep lists no points"
    return [Plot(draw.__name__, why=why) for draw in FIGURES]
  return [draw(rows) for draw in FIGURES]


def save(plot: Plot, out: str) -> str:
  """Writes OUT/<name>.png (atomically, as plots.py does); its path."""
  assert plot.figure is not None, plot.why
  return _save(plot.figure, out, plot.name)
