"""Training-curve PNGs: `python -m simclr_jax.plots RUN_DIR [RUN_DIR ...]`.

Reads RUN_DIR/metrics.jsonl (written by `reporting.Reporter`); for runs made
before that file existed it falls back to the TensorBoard event files in
RUN_DIR. Writes one PNG per metric group that has data - loss.png,
accuracy.png, learning_rate.png, throughput.png - and prints their paths.

Output goes to RUN_DIR/plots/. With several run dirs the curves are overlaid
in one set of figures (one colour per run, legend entries named after the
dirs) written to the FIRST run dir's plots/, unless `--out DIR` is given.
When a step was logged more than once (a run resumed from a checkpoint older
than its last report), the value logged last wins. Paths may be relative to
the current directory or start with `~`; the printed PNG paths are absolute.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import sys
from typing import Callable, Sequence

# TensorFlow is only imported to read old event files: keep it quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.reporting import METRICS_FILE  # noqa: E402

Metrics = dict[str, tuple[np.ndarray, np.ndarray]]
_NOT_METRICS = ("step", "time")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _is_extra_accuracy(key: str) -> bool:
  """Monitor and final-eval accuracies (kNN, linear) join the accuracy plot."""
  return key.startswith(("monitor/", "eval/")) and key.endswith("accuracy")


@dataclasses.dataclass(frozen=True)
class _Group:
  name: str  # file name without .png
  title: str
  ylabel: str
  keys: tuple[str, ...]  # plotted in this order when present
  extra: Callable[[str], bool] | None = None  # more keys, sorted after
  from_zero: bool = False  # y axis starts at 0


_GROUPS = (
  _Group("loss", "Training loss", "loss", ("contrastive_loss", "probe_loss")),
  _Group(
    "accuracy",
    "Accuracy",
    "accuracy",
    ("contrast_acc", "probe_acc", "monitor/knn_accuracy"),
    extra=_is_extra_accuracy,
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


def _read_jsonl(path: str) -> dict[str, dict[int, float]]:
  """{metric: {step: value}}; later lines overwrite earlier ones."""
  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
        step = int(record["step"])
      except (ValueError, KeyError, TypeError):
        continue  # blank, or cut off by a crash mid-write
      for key, value in record.items():
        if key in _NOT_METRICS or isinstance(value, bool):
          continue
        if isinstance(value, (int, float)):
          series[key][step] = float(value)
  return series


def _read_event_files(paths: Sequence[str]) -> dict[str, dict[int, float]]:
  """Scalar summaries from TensorBoard event files, in write-time order.

  clu writes scalars as tensor summaries of the "scalars" plugin; older
  writers used `simple_value`. Both are read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  points = []  # (wall_time, order, tag, step, value)
  for path in paths:
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for v in event.summary.value:
          if v.HasField("simple_value"):
            value = float(v.simple_value)
          elif (
            v.HasField("tensor")
            and v.metadata.plugin_data.plugin_name == "scalars"
          ):
            value = float(tf.make_ndarray(v.tensor).reshape(()))
          else:
            continue
          points.append(
            (event.wall_time, len(points), v.tag, event.step, value)
          )
    except tf.errors.DataLossError:
      pass  # a file cut off by a crash: keep what was read
  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  for _, _, tag, step, value in sorted(points):
    series[tag][int(step)] = value
  return series


def load_metrics(run_dir: str) -> Metrics:
  """{metric: (steps, values)} from a run dir, steps ascending and unique."""
  if not os.path.isdir(run_dir):
    raise UserError(
      f"run directory {run_dir} does not exist; pass the "
      "--workdir of a training run."
    )
  path = os.path.join(run_dir, METRICS_FILE)
  if os.path.exists(path):
    series, source = _read_jsonl(path), path
  else:
    events = sorted(glob.glob(os.path.join(run_dir, "*tfevents*")))
    if not events:
      raise UserError(
        f"no {METRICS_FILE} (or TensorBoard event files) in "
        f"{run_dir}; pass the --workdir of a training run that "
        "has logged at least one step."
      )
    series, source = _read_event_files(events), f"the event files in {run_dir}"
  if not series:
    raise UserError(
      f"{source} holds no metrics yet; plot again once the run "
      "has logged a step."
    )
  out = {}
  for key, by_step in series.items():
    steps = np.array(sorted(by_step), dtype=np.int64)
    out[key] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
  return out


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


def _plot_group(
  group: _Group,
  keys: Sequence[str],
  labels: Sequence[str],
  runs: Sequence[Metrics],
  path: str,
) -> None:
  """One figure; a single run gets a colour per metric, several runs a
  colour per run and a line style per metric."""
  fig = Figure(figsize=(8, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  many = len(runs) > 1
  for r, (label, metrics) in enumerate(zip(labels, runs)):
    for m, key in enumerate(keys):
      if key not in metrics:
        continue
      steps, values = metrics[key]
      ax.plot(
        steps,
        values,
        color=f"C{(r if many else m) % 10}",
        linestyle=_LINESTYLES[m % len(_LINESTYLES)] if many else "-",
        marker=_MARKERS[m % len(_MARKERS)] if len(steps) <= 20 else None,
        markersize=4,
        label=f"{label}: {key}" if many else key,
      )
  ax.set_title(group.title if many else f"{group.title} - {labels[0]}")
  ax.set_xlabel("step")
  ax.set_ylabel(group.ylabel)
  if group.from_zero:
    ax.set_ylim(bottom=0)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  tmp = path + ".tmp"
  fig.savefig(tmp, format="png")
  os.replace(tmp, path)  # a viewer never sees a half-written PNG


def plot_run(
  run_dirs: str | Sequence[str], out_dir: str | None = None
) -> list[str]:
  """Writes the PNGs for one or several (overlaid) runs; returns their paths.

  `out_dir` defaults to the first run dir's plots/.
  """
  if isinstance(run_dirs, (str, os.PathLike)):
    run_dirs = [run_dirs]
  run_dirs = [os.fspath(d) for d in run_dirs]
  if not run_dirs:
    raise UserError(
      "no run directory given; pass at least one --workdir of a training run."
    )
  labels = _run_labels(run_dirs)
  run_dirs = [_resolve(d) for d in run_dirs]
  runs = [load_metrics(d) for d in run_dirs]
  out_dir = (
    _resolve(os.fspath(out_dir))
    if out_dir
    else os.path.join(run_dirs[0], "plots")
  )
  todo = [(g, _group_keys(g, runs)) for g in _GROUPS]
  todo = [(g, keys) for g, keys in todo if keys]
  if not todo:
    wanted = sorted({k for g in _GROUPS for k in g.keys})
    raise UserError(
      f"none of the plotted metrics ({', '.join(wanted)}) are "
      f"logged in {', '.join(run_dirs)}."
    )
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for group, keys in todo:
    path = os.path.join(out_dir, f"{group.name}.png")
    _plot_group(group, keys, labels, runs, path)
    written.append(path)
  return written


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point (`argv` without the program name); returns the exit
  code: 0 on success, 2 for bad arguments or unusable run dirs."""
  parser = argparse.ArgumentParser(
    prog="python -m simclr_jax.plots",
    description="Write training-curve PNGs (loss, accuracy, learning "
    "rate, throughput) from run directories. Several dirs are overlaid.",
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
    paths = plot_run(args.run_dirs, args.out)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  for path in paths:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
