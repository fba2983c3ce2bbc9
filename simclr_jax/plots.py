"""Training-curve PNGs: `python -m simclr_jax.plots RUN_DIR [RUN_DIR ...]`.

Reads RUN_DIR/metrics.jsonl (written by `reporting.Reporter`); for runs made
before that file existed it falls back to the TensorBoard event files in
RUN_DIR. Writes one PNG per metric group that has data - loss.png (one axis
per loss over a shared step axis, so a probe-loss spike cannot flatten the
contrastive loss), accuracy.png (training curves, kNN monitor),
learning_rate.png, throughput.png, comparison.png - and prints their paths.

comparison.png shows the end-of-run evaluation as grouped bars, a group per
metric and a bar per row (trained / random_init / raw_pixels) labelled in %,
from RUN_DIR/results.json of a pretraining run, else from the last
`eval/<row>/<metric>` scalars; it is also printed as a table, before the
paths. With several run dirs it has a subplot per run that has results, and
it is not written when none has. Old names are shown as this release's:
`..._accuracy` is `..._top1` (`linear_top1`, `monitor/knn_top1`, ...).

Output goes to RUN_DIR/plots/. With several run dirs the curves are overlaid
in one set of figures (one colour per run, legend entries named after the
dirs) written to the FIRST run dir's plots/, unless `--out DIR` is given.
When a step was logged more than once (a run resumed from a checkpoint older
than its last report), the value logged last wins. Paths may be relative to
the current directory or start with `~`; the printed PNG paths are absolute.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import sys
from typing import Callable, Sequence

# TensorFlow is only imported to read old event files: keep it quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

from simclr_jax.errors import ArgumentParser  # noqa: E402
from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.errors import print_error  # noqa: E402
from simclr_jax.metrics_log import Metrics  # noqa: E402
from simclr_jax.metrics_log import load_metrics  # noqa: E402
from simclr_jax.metrics_log import new_name  # noqa: E402
from simclr_jax.results import FILENAME as RESULTS_FILE  # noqa: E402

Table = dict[str, dict[str, float]]  # {row: {metric: fraction}}
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_ACCURACY = re.compile(r"(^|[_/])(acc|accuracy|top\d+)$")
_LOSS = re.compile(r"(^|[_/])loss$")
# End-of-run rows in this order (others after, sorted), and their colours.
_ROW_COLORS = {"trained": "C0", "random_init": "C7", "raw_pixels": "C1"}


def _is_curve_accuracy(key: str) -> bool:
  """Accuracies logged during training (the kNN monitor, top-1 of a
  downstream run); the end-of-run `eval/...` go to comparison.png."""
  return not key.startswith("eval/") and bool(_ACCURACY.search(key))


@dataclasses.dataclass(frozen=True)
class _Group:
  name: str  # file name without .png
  title: str
  ylabel: str
  keys: tuple[str, ...]  # plotted in this order when present
  extra: Callable[[str], object] | None = None  # more keys, sorted after
  from_zero: bool = False  # y axis starts at 0
  split: bool = False  # one axis per key (scales too different to share)


_GROUPS = (
  _Group(
    "loss",
    "Training loss",
    "loss",
    ("contrastive_loss", "probe_loss"),
    extra=_LOSS.search,
    split=True,
  ),
  _Group(
    "accuracy",
    "Accuracy",
    "accuracy",
    ("contrast_acc", "probe_acc", "monitor/knn_top1"),
    extra=_is_curve_accuracy,
    from_zero=True,
  ),
  _Group("learning_rate", "Learning rate", "learning rate", ("learning_rate",)),
  _Group(
    "throughput",
    "Throughput",
    "images / second",
    ("images_per_sec",),
    from_zero=True,
  ),
)


def _group_keys(group: _Group, runs: Sequence[Metrics]) -> list[str]:
  present = set().union(*runs)
  keys = [k for k in group.keys if k in present]
  if group.extra is not None:
    keys += sorted(k for k in present if group.extra(k) and k not in keys)
  return keys


def _resolve(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def _run_labels(run_dirs: Sequence[str]) -> list[str]:
  """Dir base names, or the paths as given when base names collide."""
  names = [os.path.basename(_resolve(d)) for d in run_dirs]
  if len(set(names)) == len(names):
    return names
  return [os.path.normpath(d) for d in run_dirs]


def _results_json(run_dir: str) -> Table:
  """The rows of a pretraining run's results.json (new metric names, empty
  rows dropped); {} when there is none, or it is a downstream run's."""
  try:
    with open(os.path.join(run_dir, RESULTS_FILE), encoding="utf-8") as f:
      results = json.load(f)
    rows = results["metrics"] if results["mode"] == "pretrain" else {}
    table = {
      row: {new_name(m): float(v) for m, v in values.items()}
      for row, values in rows.items()
    }
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return {}
  return {row: values for row, values in table.items() if values}


def _eval_scalars(metrics: Metrics) -> Table:
  """The `eval/<row>/<metric>` scalars of the last step that logged any (a
  resumed run may have been evaluated twice)."""
  evals = {
    k: v for k, v in metrics.items() if re.match(r"eval/[^/]+/[^/]+$", k)
  }
  last = max((steps[-1] for steps, _ in evals.values()), default=None)
  table: Table = collections.defaultdict(dict)
  for key, (steps, values) in evals.items():
    if steps[-1] == last:
      _, row, metric = key.split("/")
      table[row][metric] = float(values[-1])
  return dict(table)


def _comparison(run_dir: str, metrics: Metrics) -> tuple[Table, str]:
  """The end-of-run rows and where they came from: results.json, else the
  eval/ scalars."""
  table = _results_json(run_dir)
  if table:
    return table, RESULTS_FILE
  return _eval_scalars(metrics), "the eval/ scalars"


def _rows(table: Table) -> list[str]:
  """trained, random_init, raw_pixels first; any other rows after."""
  known = [r for r in _ROW_COLORS if r in table]
  return known + sorted(r for r in table if r not in _ROW_COLORS)


def _metric_names(tables: Sequence[Table]) -> list[str]:
  """Every metric of `tables`, knn_k20_top1 before knn_k200_top1."""
  names = {m for t in tables for values in t.values() for m in values}
  natural = lambda n: [
    int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)
  ]
  return sorted(names, key=natural)


def _comparison_text(label: str, table: Table, source: str) -> str:
  """The end-of-run rows as text: a line per metric, a column per row."""
  rows, metrics = _rows(table), _metric_names([table])
  width = max(map(len, ["metric", *metrics]))
  lines = [f"{label}: end-of-run evaluation, % (from {source})"]
  lines.append(f"{'metric':<{width}}" + "".join(f" {r:>12}" for r in rows))
  for m in metrics:
    cells = [f"{100 * table[r][m]:.2f}" if m in table[r] else "-" for r in rows]
    lines.append(f"{m:<{width}}" + "".join(f" {c:>12}" for c in cells))
  return "\n".join(lines)


def _draw_lines(
  ax: object,
  panel: Sequence[str],
  keys: Sequence[str],
  labels: Sequence[str],
  runs: Sequence[Metrics],
  name_keys: bool = True,
) -> None:
  """The curves of `panel` (some of `keys`); a single run gets a colour per
  metric, several runs a colour per run and a line style per metric.
  Several runs' legend names the keys too unless not `name_keys`."""
  many = len(runs) > 1
  for r, (label, metrics) in enumerate(zip(labels, runs)):
    for key in panel:
      if key not in metrics:
        continue
      m = keys.index(key)
      steps, values = metrics[key]
      ax.plot(
        steps,
        values,
        color=f"C{(r if many else m) % 10}",
        linestyle=_LINESTYLES[m % len(_LINESTYLES)] if many else "-",
        marker=_MARKERS[m % len(_MARKERS)] if len(steps) <= 20 else None,
        markersize=4,
        label=(f"{label}: {key}" if name_keys else label) if many else key,
      )


def _curve_figure(
  group: _Group,
  keys: Sequence[str],
  labels: Sequence[str],
  runs: Sequence[Metrics],
) -> Figure:
  """One figure for a group: one axis, or (`split`) one axis per key
  sharing the step axis."""
  panels = [[k] for k in keys] if group.split else [list(keys)]
  height = 5.0 if len(panels) == 1 else 1.0 + 2.5 * len(panels)
  fig = Figure(figsize=(8, height), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
  many = len(runs) > 1
  for ax, panel in zip(axes, panels):
    _draw_lines(ax, panel, keys, labels, runs, name_keys=not group.split)
    ax.set_ylabel(panel[0] if group.split else group.ylabel)
    if group.from_zero:
      ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if many or not group.split:  # else the y label names the one curve
      ax.legend(fontsize="small")
  axes[0].set_title(group.title if many else f"{group.title} - {labels[0]}")
  axes[-1].set_xlabel("step")
  fig.tight_layout()
  return fig


def _draw_bars(ax: object, metrics: Sequence[str], table: Table) -> None:
  """A group of bars per metric, a bar per row, each labelled in %."""
  rows = _rows(table)
  width = 0.8 / len(rows)
  for i, row in enumerate(rows):
    xs = [j for j, m in enumerate(metrics) if m in table[row]]
    values = [100 * table[row][metrics[j]] for j in xs]
    x = np.array(xs, dtype=float) + (i - (len(rows) - 1) / 2) * width
    color = _ROW_COLORS.get(row, f"C{(2 + i) % 10}")
    bars = ax.bar(x, values, width * 0.95, label=row, color=color)
    ax.bar_label(bars, [f"{v:.1f}%" for v in values], fontsize=8, padding=2)
  ax.set_xticks(range(len(metrics)), metrics)
  ax.set_yticks(range(0, 101, 20))
  ax.set_ylim(0, 125)  # headroom for the bar labels and the legend
  ax.set_ylabel("accuracy (%)")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(loc="upper center", ncol=len(rows), frameon=False)


def _comparison_figure(
  labels: Sequence[str], tables: Sequence[Table]
) -> Figure:
  """End-of-run results, one subplot per run, the same metric groups in
  each so runs line up."""
  metrics = _metric_names(tables)
  width = max(6.0, 1.5 + 1.6 * len(metrics))
  fig = Figure(figsize=(width, 0.5 + 4.0 * len(tables)), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
  for ax, label, table in zip(axes, labels, tables):
    _draw_bars(ax, metrics, table)
    ax.set_title(f"End-of-run evaluation - {label}")
  fig.tight_layout()
  return fig


def _save(fig: Figure, out_dir: str, name: str) -> str:
  path = os.path.join(out_dir, f"{name}.png")
  tmp = path + ".tmp"
  fig.savefig(tmp, format="png")
  os.replace(tmp, path)  # a viewer never sees a half-written PNG
  return path


def _make_out_dir(out_dir: str) -> None:
  """Creates the output folder, or says why it cannot be."""
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    what = "is a file" if os.path.isfile(out_dir) else e.strerror
    raise UserError(
      f"cannot write plots to {out_dir} ({what}); pass another --out folder."
    ) from None


def _plot(
  run_dirs: str | Sequence[str], out_dir: str | None
) -> tuple[list[str], list[str]]:
  """plot_run, also returning the comparison tables as text."""
  if isinstance(run_dirs, (str, os.PathLike)):
    run_dirs = [run_dirs]
  run_dirs = [os.fspath(d) for d in run_dirs]
  if not run_dirs or not all(run_dirs):
    raise UserError(
      "no run directory given (or an empty one); pass at least one "
      "--workdir of a training run."
    )
  labels = _run_labels(run_dirs)
  run_dirs = [_resolve(d) for d in run_dirs]
  runs = [load_metrics(d) for d in run_dirs]
  runs = [{new_name(k): v for k, v in m.items()} for m in runs]
  out_dir = (
    _resolve(os.fspath(out_dir))
    if out_dir
    else os.path.join(run_dirs[0], "plots")
  )
  todo = [(g, _group_keys(g, runs)) for g in _GROUPS]
  todo = [(g, keys) for g, keys in todo if keys]
  compared = [
    (label, *_comparison(d, m)) for label, d, m in zip(labels, run_dirs, runs)
  ]
  compared = [c for c in compared if c[1]]
  if not todo and not compared:
    wanted = sorted({k for g in _GROUPS for k in g.keys})
    raise UserError(
      f"none of the plotted metrics ({', '.join(wanted)}) are "
      f"logged in {', '.join(run_dirs)}."
    )
  _make_out_dir(out_dir)
  written = [
    _save(_curve_figure(g, keys, labels, runs), out_dir, g.name)
    for g, keys in todo
  ]
  if compared:
    fig = _comparison_figure([c[0] for c in compared], [c[1] for c in compared])
    written.append(_save(fig, out_dir, "comparison"))
  return written, [_comparison_text(*c) for c in compared]


def plot_run(
  run_dirs: str | Sequence[str], out_dir: str | None = None
) -> list[str]:
  """Writes the PNGs for one or several (overlaid) runs; returns their paths.
  `out_dir` defaults to the first run dir's plots/."""
  return _plot(run_dirs, out_dir)[0]


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point (`argv` without the program name); returns the exit
  code: 0 on success, 2 for bad arguments or unusable run dirs."""
  parser = ArgumentParser(
    prog="python -m simclr_jax.plots",
    description="Write training-curve PNGs (loss, accuracy, learning "
    "rate, throughput) and the end-of-run comparison (comparison.png, also "
    "printed as a table) from run directories. Several dirs are overlaid.",
  )
  parser.add_argument(
    "run_dirs", nargs="+", metavar="RUN_DIR", help="--workdir of a training run"
  )
  parser.add_argument(
    "--out",
    metavar="DIR",
    default=None,
    help="output folder (default: FIRST_RUN_DIR/plots)",
  )
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # --help (0) or a usage error (2)
    return e.code if isinstance(e.code, int) else 2
  try:
    paths, tables = _plot(args.run_dirs, args.out)
  except UserError as e:
    print_error(str(e))
    return 2
  for table in tables:
    print(table + "\n")
  for path in paths:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
