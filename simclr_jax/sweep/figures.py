"""The sweep report's figures, in the SimCLR paper's layouts.

Each `*_figure(rows)` returns a matplotlib Figure, or None with the reason
when the sweep has no data for it:

  accuracy_vs_epochs     accuracy against epochs, a line per batch size
                         (the paper's Figure 9); when points vary epochs
  accuracy_vs_params     accuracy against backbone parameters, a line per
                         depth, points labelled by width (Figure 7); when
                         points vary model.depth or model.width_multiplier
  knn_vs_hours           the kNN monitor against wall-clock hours since a
                         point's first report, a line per point
  throughput_vs_devices  images/s against devices, a line per scaling kind,
                         ideal linear scaling dashed; when devices vary

Points that are not done (or lack the value a figure needs) are named in a
note at the foot of the figure, so none disappears without a trace.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simclr_jax.sweep import layout

_ACCURACIES = (("knn_top1", "kNN"), ("linear_top1", "linear"))
_MONITOR = ("monitor/knn_top1", "monitor/knn_accuracy")


def _varies(rows: Sequence[Any], key: str) -> bool:
  """Whether points known to set `key` set it to more than one value (a
  point not run yet has no config to read the base value from)."""
  values = {repr(r.setting(key)) for r in rows if r.setting(key) is not None}
  return len(values) > 1


def _note(fig: Figure, left_out: Sequence[str]) -> None:
  if left_out:
    text = "not shown: " + ", ".join(left_out)
    fig.text(0.01, 0.01, text, fontsize=7, wrap=True, va="bottom")


def _new(n_axes: int) -> tuple[Figure, list]:
  fig = Figure(figsize=(5.5 * n_axes, 4.4), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, [fig.add_subplot(1, n_axes, i + 1) for i in range(n_axes)]


def _absent(rows: Sequence[Any], has: Callable[[Any], bool]) -> list[str]:
  """Names of rows not drawn, with why."""
  out = []
  for r in rows:
    if r.status != layout.DONE:
      out.append(f"{r.point} ({r.status})")
    elif not has(r):
      out.append(f"{r.point} (no value)")
  return out


def _series_figure(
  rows: Sequence[Any], x: Callable[[Any], Any], series: Callable[[Any], Any],
  xlabel: str, label: Callable[[Any], str],
) -> Figure | None:  # fmt: skip
  """Accuracy subplots (kNN, linear) of x, one line per series value."""
  metrics = [
    (k, t)
    for k, t in _ACCURACIES
    if any(r.values.get(k) is not None for r in rows)
  ]
  if not metrics:
    return None
  fig, axes = _new(len(metrics))
  for ax, (key, title) in zip(axes, metrics):
    groups = collections.defaultdict(list)
    for r in rows:
      if r.status == layout.DONE and r.values.get(key) is not None:
        if x(r) is not None:
          groups[series(r)].append((x(r), 100 * r.values[key], r))
    for i, (value, points) in enumerate(sorted(groups.items(), key=repr)):
      points.sort(key=lambda p: p[0])
      ax.plot(
        [p[0] for p in points], [p[1] for p in points], marker="os^Dv"[i % 5],
        label=label(value),
      )  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{title} top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  _note(fig, _absent(rows, lambda r: x(r) is not None))
  return fig


def accuracy_vs_epochs(rows: Sequence[Any]) -> tuple[Figure | None, str]:
  key = next((k for k in ("epochs", "train_steps") if _varies(rows, k)), "")
  if not key:
    return None, "the points do not vary epochs or train_steps"
  fig = _series_figure(
    rows, lambda r: r.setting(key), lambda r: r.setting("batch_size"),
    key.replace("_", " "), lambda b: f"batch {b}",
  )  # fmt: skip
  return fig, "" if fig else "no point has an accuracy yet"


def accuracy_vs_params(rows: Sequence[Any]) -> tuple[Figure | None, str]:
  if not (
    _varies(rows, "model.depth") or _varies(rows, "model.width_multiplier")
  ):
    return None, "the points do not vary model.depth or model.width_multiplier"
  params = lambda r: r.values.get("backbone_params")  # noqa: E731
  fig = _series_figure(
    rows, params, lambda r: r.setting("model.depth"),
    "backbone parameters", lambda d: f"ResNet-{d}",
  )  # fmt: skip
  if fig is None:
    return None, "no point has an accuracy yet"
  for ax in fig.axes:
    ax.set_xscale("log")
  for r in rows:
    if r.status == layout.DONE and params(r):
      width = r.setting("model.width_multiplier")
      for ax, (key, _) in zip(fig.axes, _ACCURACIES):
        if r.values.get(key) is not None:
          ax.annotate(f"{width}x", (params(r), 100 * r.values[key]), fontsize=7)
  return fig, ""


def knn_vs_hours(rows: Sequence[Any]) -> tuple[Figure | None, str]:
  def curve(r: Any) -> list[tuple[float, float]]:
    timed = [rec for rec in r.records if "time" in rec]
    if not timed:
      return []
    t0 = timed[0]["time"]
    return [
      ((rec["time"] - t0) / 3600, 100 * rec[k])
      for rec in timed
      for k in _MONITOR
      if k in rec
    ]

  curves = {r.point: curve(r) for r in rows}
  if not any(curves.values()):
    return None, "no point logged the kNN monitor (eval.monitor_every_epochs)"
  fig, (ax,) = _new(1)
  for name, points in curves.items():
    if points:
      ax.plot(
        [p[0] for p in points], [p[1] for p in points], marker=".", label=name
      )
  ax.set_xlabel("wall-clock hours since the point's first report")
  ax.set_ylabel("kNN monitor top-1 (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  _note(fig, [f"{n} (no monitor)" for n, c in curves.items() if not c])
  return fig, ""


def throughput_vs_devices(rows: Sequence[Any]) -> tuple[Figure | None, str]:
  has = lambda r: r.values.get("devices") and r.values.get("images_per_sec")  # noqa: E731
  if len({r.values.get("devices") for r in rows if has(r)}) < 2:
    return None, "the points do not differ in device count"
  fig, (ax,) = _new(1)
  groups = collections.defaultdict(list)
  for r in rows:
    if r.status == layout.DONE and has(r):
      groups[r.values.get("scaling") or "run"].append(
        (r.values["devices"], r.values["images_per_sec"])
      )
  for i, (kind, points) in enumerate(sorted(groups.items())):
    points.sort()
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    line = ax.plot(xs, ys, marker="os^"[i % 3], label=f"{kind} scaling")[0]
    ideal = [ys[0] * n / xs[0] for n in xs]
    ax.plot(xs, ideal, ls="--", color=line.get_color(), label=f"{kind}: ideal")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("devices")
  ax.set_ylabel("images/s")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  _note(fig, _absent(rows, has))
  return fig, ""


FIGURES = {
  "accuracy_vs_epochs": accuracy_vs_epochs,
  "accuracy_vs_params": accuracy_vs_params,
  "knn_vs_hours": knn_vs_hours,
  "throughput_vs_devices": throughput_vs_devices,
}


def draw_all(rows: Sequence[Any], out: str) -> tuple[list[str], list]:
  """Saves every figure the sweep has data for into `out`; returns the
  paths and the (name, reason) of those skipped."""
  paths, skipped = [], []
  for name, draw in FIGURES.items():
    fig, why = draw(rows)
    if fig is None:
      skipped.append((name, why))
      continue
    path = os.path.join(out, f"{name}.png")
    fig.savefig(path + ".tmp", format="png", dpi=110)
    os.replace(path + ".tmp", path)
    paths.append(path)
  return paths, skipped
