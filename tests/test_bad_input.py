"""Every bad input ends the same way: one `error:` line saying what is wrong
and what to do, a non-zero exit, no traceback, and the run directories it
named untouched. One row of `CASES` per input; every row gets the same five
checks (`test_bad_input`).

The rows run in ONE process (`bad_input_driver.py`: the entry points called
as `python -m` would, file descriptors 1 and 2 captured, absl flags reset
between rows), since a subprocess per row costs 5-10 s of imports; a few
rows also run as real subprocesses to show that the driver matches the
command line (`test_driver_matches_the_command_line`). Inputs that must
WORK (unicode and spaces in paths, a symlinked workdir, k above the kNN bank
size) are the `POSITIVE` rows, in the same process.

Paths in argv (and in `expect` and `env`) are placeholders for the inputs
`_make_inputs` makes: {run} is a copy of the shared finished tiny run,
{new} a fresh path of the row's own that must still not exist afterwards,
the others broken inputs. Every input a row names must be byte-identical
after the row (the driver hashes them just before and after it, so a
change is blamed on the row that made it).

A demanding user's questions answered here rather than by a row: a class
folder holding one image is valid data
(`test_a_class_of_one_image_is_accepted`); a kNN k above the bank size
votes with the whole bank, with one `warning:` line (a POSITIVE row).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY, TINY_DOWNSTREAM, run_cli

MAIN, EMBED, PLOTS = "simclr_jax.main", "simclr_jax.embed", "simclr_jax.plots"
IMPORT_TF = "simclr_jax.import_tf"
CFG = ["--config", "configs/default.py"]
# Pretraining a new run dir; a bad value below fails before any training.
PRE = (MAIN, [*CFG, "--workdir", "{new}", *TINY])
# Resuming the finished tiny run in place, with the config it was made by.
RESUME = (MAIN, ["--config", "{tiny_py}", "--workdir", "{run}"])
# A downstream kNN run on the tiny run, into a new dir.
KNN = (
  MAIN,
  [*CFG, "--workdir", "{new}", *TINY_DOWNSTREAM, "--config.mode=knn"],
)
KNN_RUN = (KNN[0], [*KNN[1], "--config.init_checkpoint={run}"])
LIN = (KNN_RUN[0], [*KNN_RUN[1], "--config.mode=linear"])
FT = (KNN_RUN[0], [*KNN_RUN[1], "--config.mode=finetune"])
EMB = (EMBED, ["--checkpoint", "{run}", "--out", "{new}/e.npz"])
BARE = {
  MAIN: (MAIN, []),
  EMBED: (EMBED, []),
  PLOTS: (PLOTS, []),
  IMPORT_TF: (IMPORT_TF, []),
}
# Converting an official TF checkpoint into a new run dir.
IMP = (IMPORT_TF, ["--out", "{new}"])


@dataclasses.dataclass(frozen=True)
class Case:
  """A bad input: the command line, and what its error line must say."""

  id: str
  base: tuple[str, list[str]]  # (module, argv prefix)
  args: list[str]  # appended to the prefix
  expect: str | re.Pattern  # in the error line: "what to do"
  env: dict[str, str] | None = None  # set for this row only


def row(id_, base, args, expect, *marks, env=None) -> pytest.param:
  return pytest.param(Case(id_, base, args, expect, env), id=id_, marks=marks)


# fmt: off
CASES = [
  # Numbers: wrong type, out of range.
  row("batch_0", PRE, ["--config.batch_size=0"], "must be at least 2"),
  row("batch_neg", PRE, ["--config.batch_size=-1"], "must be at least 2"),
  row("batch_abc", PRE, ["--config.batch_size=abc"], "pass an integer"),
  row("lr_neg", PRE, ["--config.optim.base_learning_rate=-1"], "must be a finite number > 0"),
  row("lr_nan", PRE, ["--config.optim.base_learning_rate=nan"], "must be a finite number > 0"),
  row("lr_inf", PRE, ["--config.optim.base_learning_rate=inf"], "must be a finite number > 0"),
  row("batch_float", PRE, ["--config.batch_size=3.5"], "pass an integer, e.g. --config.batch_size=256"),
  row("bool_text", PRE, ["--config.data.cache=maybe"], "pass True or False"),
  row("width_neg", PRE, ["--config.model.width_multiplier=-1"], "must be a finite number > 0"),
  row("keep_0", PRE, ["--config.keep_checkpoints=0"], "must be a finite number > 0"),
  row("lr_text", PRE, ["--config.optim.base_learning_rate=fast"], "pass a number"),
  row("epochs_0", PRE, ["--config.epochs=0", "--config.train_steps=0"], "set config.epochs or config.train_steps"),
  row("epochs_neg", PRE, ["--config.epochs=-1", "--config.train_steps=0"], "set config.epochs or config.train_steps"),
  row("steps_neg", PRE, ["--config.train_steps=-5"], "must be a finite number >= 0"),
  row("temp_0", PRE, ["--config.loss.temperature=0"], "must be a finite number > 0"),
  row("temp_neg", PRE, ["--config.loss.temperature=-0.5"], "must be a finite number > 0"),
  row("size_0", PRE, ["--config.data.image_size=0"], "use at least 8 pixels"),
  row("size_huge", PRE, ["--config.data.image_size=1000000"], "use at most 2048 pixels"),
  row("host_size_huge", PRE, ["--config.data.host_size=1000000"], "use at most 2048 pixels"),
  row("crop_reversed", PRE, ["--config.augment.crop_area=(1.0, 0.2)"], "fix the value"),
  row("crop_above_1", PRE, ["--config.augment.crop_area=(0.2, 1.5)"], "fix the value"),
  row("crop_zero", PRE, ["--config.augment.crop_area=(0.0, 1.0)"], "fix the value"),
  row("prob_above_1", PRE, ["--config.augment.color_jitter_prob=1.5"], "must be in [0, 1.0]"),
  row("prob_neg", PRE, ["--config.augment.grayscale_prob=-0.1"], "must be in [0, 1.0]"),
  row("momentum_1", PRE, ["--config.optim.momentum=1"], "must be in [0, 1)"),
  row("batch_vs_devices", PRE, ["--config.batch_size=60"], "--config.batch_size=64"),
  row("knn_k_text", PRE, ["--config.eval.knn_ks=abc"], "must be positive integers"),
  row("num_processes_neg", PRE, ["--config.distributed.num_processes=-1"], "must be >= 0"),
  row("val_fraction_1", KNN_RUN, ["--config.mode=logistic", "--config.linear_eval.val_fraction=1.5"], "must be in (0, 1)"),
  row("label_fraction_0", KNN_RUN, ["--config.mode=finetune", "--config.finetune.label_fraction=0"], "must be in (0, 1]"),
  row("knn_k_0", PRE, ["--config.eval.knn_ks=(0,)"], "must be positive integers"),
  # Numbers of the downstream modes (checked before the encoder loads).
  row("linear_batch_0", LIN, ["--config.linear_eval.batch_size=0"], "must be a finite number > 0; fix it in the config or with --config.linear_eval.batch_size=VALUE"),
  row("linear_epochs_neg", LIN, ["--config.linear_eval.epochs=-1"], "with --config.linear_eval.epochs=VALUE"),
  row("linear_lr_nan", LIN, ["--config.linear_eval.base_learning_rate=nan"], "with --config.linear_eval.base_learning_rate=VALUE"),
  row("linear_momentum_1", LIN, ["--config.linear_eval.momentum=1"], "must be in [0, 1)"),
  row("linear_method_unknown", LIN, ["--config.linear_eval.method=adam"], "use 'sgd' (the paper's protocol) or 'logistic'"),
  row("linear_lr_scaling_unknown", LIN, ["--config.linear_eval.lr_scaling=cubic"], "use 'linear' or 'sqrt'"),
  row("linear_wd_neg", LIN, ["--config.linear_eval.weight_decay=-1"], "must be a finite number >= 0"),
  row("finetune_lr_nan", FT, ["--config.finetune.base_learning_rate=nan"], "with --config.finetune.base_learning_rate=VALUE"),
  row("finetune_batch_neg", FT, ["--config.finetune.batch_size=-4"], "with --config.finetune.batch_size=VALUE"),
  row("finetune_epochs_text", FT, ["--config.finetune.epochs=many"], "pass an integer, e.g. --config.finetune.epochs=60"),
  row("finetune_head_layers_neg", FT, ["--config.finetune.head_layers=-1"], "must be in [0, 2) for a 2-layer projection head"),
  row("finetune_head_layers_big", FT, ["--config.finetune.head_layers=7"], "must be in [0, 2) for a 2-layer projection head"),
  row("finetune_warmup_neg", FT, ["--config.finetune.warmup_epochs=-1"], "with --config.finetune.warmup_epochs=VALUE"),
  row("eval_batch_0", KNN_RUN, ["--config.eval.batch_size=0"], "with --config.eval.batch_size=VALUE"),
  row("knn_temperature_0", KNN_RUN, ["--config.eval.knn_temperature=0"], "with --config.eval.knn_temperature=VALUE"),
  row("probe_iters_0", KNN_RUN, ["--config.mode=logistic", "--config.eval.probe_max_iters=0"], "with --config.eval.probe_max_iters=VALUE"),
  # Keys, modes and data.
  row("unknown_key", PRE, ["--config.optim.base_lerning_rate=1"], "did you mean optim.base_learning_rate"),
  row("unknown_mode", PRE, ["--config.mode=probe"], "use one of pretrain, knn"),
  row("unknown_section", PRE, ["--config.modle.depth=50"], "unknown config key 'modle' in --config.modle.depth; did you mean mode, model"),
  row("print_config_unknown_key", BARE[MAIN], [*CFG, "--print_config", "--config.optim.base_lerning_rate=1"], "did you mean optim.base_learning_rate"),
  row("print_config_no_config", BARE[MAIN], ["--print_config"], "--config is required"),
  row("unknown_flag", PRE, ["--wrkdir=x"], "Did you mean: workdir"),
  row("override_before_config", BARE[MAIN], ["--config.batch_size=4", *CFG, "--workdir", "{new}"], "put --config FILE before"),
  row("pretrain_with_init", PRE, ["--config.init_checkpoint={run}"], "Leave init_checkpoint empty"),
  row("unknown_split", PRE, ["--config.data.eval_split=validation"], "set train_split/eval_split"),
  row("unknown_source", PRE, ["--config.data.source=hdf5"], "use one of builtin, tfds, folder"),
  row("unknown_tfds_name", PRE, ["--config.data.source=tfds", "--config.data.name=cifar_10"], "cifar10"),
  row("tfds_unprepared", PRE, ["--config.data.source=tfds", "--config.data.name=mnist", "--config.data.data_dir={empty}"], "download_and_prepare"),
  row("tfds_unprepared_home", PRE, ["--config.data.source=tfds", "--config.data.name=mnist", "--config.data.data_dir=~/tfds"], "not prepared in {tmp}/tfds and this program never downloads", env={"HOME": "{tmp}"}),
  row("folder_missing", PRE, ["--config.data.source=folder", "--config.data.data_dir={tmp}/absent"], "set data_dir to the root of"),
  row("folder_no_dir", PRE, ["--config.data.source=folder", "--config.data.data_dir="], "needs data_dir: the root of"),
  row("folder_empty", PRE, ["--config.data.source=folder", "--config.data.data_dir={empty}"], "no images"),
  row("folder_not_images", PRE, ["--config.data.source=folder", "--config.data.data_dir={texts}"], "no images"),
  row("folder_corrupt", PRE, ["--config.data.source=folder", "--config.data.data_dir={corrupt}"], re.compile("corrupt|unreadable|could not be decoded")),
  row("folder_too_few", PRE, ["--config.data.source=folder", "--config.data.data_dir={images}"], "lower the batch size"),
  # The workdir.
  row("workdir_file", PRE, ["--workdir", "{file}"], "choose another --workdir"),
  row("workdir_under_file", PRE, ["--workdir", "{file}/run"], "choose another --workdir"),
  row("workdir_proc", PRE, ["--workdir", "/proc/simclr_bad_input"], "choose another --workdir"),
  row("workdir_sys", PRE, ["--workdir", "/sys/simclr_bad_input/run"], "choose another --workdir"),
  row("workdir_symlink_loop", PRE, ["--workdir", "{loop}"], "is a symbolic link that leads nowhere"),
  row("workdir_under_symlink_loop", PRE, ["--workdir", "{loop}/run"], "is a symbolic link that leads nowhere"),
  row("workdir_empty", PRE, ["--workdir="], "--workdir is required"),
  row("workdir_missing", BARE[MAIN], CFG, "--workdir is required"),
  row("extra_argument", PRE, ["stray"], "pass settings as --config.key=value"),
  # Config files.
  row("config_missing", BARE[MAIN], ["--config", "configs/nope.py", "--workdir", "{new}"], "pass e.g. --config configs/default.py"),
  row("config_empty", BARE[MAIN], ["--config=", "--workdir", "{new}"], "pass e.g. --config configs/default.py"),
  row("config_not_given", BARE[MAIN], ["--workdir", "{new}"], "--config is required"),
  row("config_syntax", BARE[MAIN], ["--config", "{syntax_py}", "--workdir", "{new}"], "syntax.py:3: SyntaxError"),
  row("config_is_dir", BARE[MAIN], ["--config", "{empty}", "--workdir", "{new}"], "is a directory; pass e.g. --config configs/default.py"),
  row("config_not_python", BARE[MAIN], ["--config", "{file}", "--workdir", "{new}"], "file.txt:1: SyntaxError"),
  row("config_no_get_config", BARE[MAIN], ["--config", "{no_get_py}", "--workdir", "{new}"], "define get_config()"),
  row("config_raises", BARE[MAIN], ["--config", "{raises_py}", "--workdir", "{new}"], "fix the config file"),
  row("config_not_dict", BARE[MAIN], ["--config", "{not_dict_py}", "--workdir", "{new}"], "return an ml_collections.ConfigDict"),
  # An existing run dir.
  row("resume_other_depth", RESUME, ["--config.model.depth=34"], "use a new --workdir or the original config"),
  row("resume_corrupt_json", RESUME, ["--workdir", "{run_bad_json}"], "restore it or use a new --workdir"),
  # init_checkpoint of a downstream mode.
  row("init_missing", KNN, ["--config.init_checkpoint={tmp}/absent"], "pass the --workdir of a pretraining run"),
  row("init_not_given", KNN, [], "pass --config.init_checkpoint=RUN_DIR"),
  row("init_file", KNN, ["--config.init_checkpoint={file}"], "pass the --workdir of a pretraining run"),
  row("init_not_a_run", KNN, ["--config.init_checkpoint={empty}"], "pass the --workdir of a pretraining run"),
  row("init_no_checkpoint", KNN, ["--config.init_checkpoint={run_no_ckpt}"], "let the run reach"),
  row("init_corrupt_json", KNN, ["--config.init_checkpoint={run_bad_json}"], "restore it from a backup"),
  row("init_other_arch", KNN_RUN, ["--config.model.depth=34"], "leave those keys out"),
  row("init_mismatched_ckpt", KNN, ["--config.init_checkpoint={run_edited}"], "put back the run_config.json"),
  row("init_is_workdir", KNN_RUN, ["--workdir", "{run}"], "give the knn run its own --workdir"),
  # The --workdir of a downstream trainer (it keeps checkpoints there).
  row("linear_workdir_other_settings", KNN_RUN, ["--config.mode=linear", "--workdir", "{linear_other}"], "or the settings it was started with to resume it"),
  row("finetune_workdir_pretraining_run", KNN_RUN, ["--config.mode=finetune", "--workdir", "{run_no_results}"], "give the fine-tuning run a new --workdir"),
  row("init_unlabelled", KNN, ["--config.init_checkpoint={run}", "--config.data.eval_split="], "set it (e.g. --config.data.eval_split=test)"),
  # embed.
  row("embed_no_checkpoint", EMB, ["--checkpoint", "{run_no_ckpt}", "--images", "{images}"], "let the run reach"),
  row("embed_not_a_run", EMB, ["--checkpoint", "{empty}", "--images", "{images}"], "pass the --workdir of a pretraining run"),
  row("embed_images_missing", EMB, ["--images", "{tmp}/absent"], "--images"),
  row("embed_not_images", EMB, ["--images", "{texts}"], "pass the folder that holds them"),
  row("embed_corrupt_images", EMB, ["--images", "{corrupt}"], "check that they are valid images"),
  row("embed_images_file", EMB, ["--images", "{file}"], "--images"),
  row("embed_batch_0", EMB, ["--images", "{images}", "--batch_size=0"], "must be at least 1"),
  row("embed_size_huge", EMB, ["--images", "{images}", "--image_size=1000000"], "use at most 2048 pixels"),
  row("embed_step_missing", EMB, ["--images", "{images}", "--step=7"], "available steps: 2"),
  row("embed_out_in_proc", EMB, ["--images", "{images}", "--out", "/proc/simclr_bad_input.npz"], "--out"),
  row("embed_out_is_dir", EMB, ["--images", "{images}", "--out", "{empty}"], "pass a file name such as"),
  row("embed_out_under_symlink_loop", EMB, ["--images", "{images}", "--out", "{loop}/e.npz"], "fix the link or choose another --out"),
  row("embed_out_empty", EMB, ["--images", "{images}", "--out="], "--out is empty; pass a path"),
  row("embed_checkpoint_empty", EMB, ["--images", "{images}", "--checkpoint="], "--checkpoint is empty; pass a path"),
  row("embed_usage", BARE[EMBED], ["--images", "{images}"], "required"),
  # import_tf (the conversions themselves: tests/test_tf_import_*.py).
  row("import_checkpoint_missing", IMP, ["--checkpoint", "{tmp}/absent/model.ckpt-5"], "pass the folder of a downloaded checkpoint or its prefix"),
  row("import_checkpoint_empty_dir", IMP, ["--checkpoint", "{empty}"], "pass the checkpoint prefix"),
  row("import_checkpoint_is_a_run", IMP, ["--checkpoint", "{run}"], "use it as it is"),
  row("import_checkpoint_corrupt", IMP, ["--checkpoint", "{bad_tf_index}"], "download it again"),
  row("import_out_exists", IMP, ["--checkpoint", "{bad_tf_index}", "--out", "{run}"], "give the converted run a new folder"),
  row("import_out_in_proc", IMP, ["--checkpoint", "{bad_tf_index}", "--out", "/proc/simclr_bad_input"], "choose another --out"),
  row("import_out_empty", IMP, ["--checkpoint", "{bad_tf_index}", "--out="], "--out is empty; pass a path"),
  row("import_depth_text", IMP, ["--checkpoint", "{bad_tf_index}", "--depth=fifty"], "invalid int value"),
  row("import_usage", BARE[IMPORT_TF], [], "required"),
  # plots.
  row("plots_missing_dir", BARE[PLOTS], ["{tmp}/absent"], "pass the --workdir of a training run"),
  row("plots_no_metrics", BARE[PLOTS], ["{empty}"], "pass the --workdir of a training run"),
  row("plots_results_missing", BARE[PLOTS], ["{run_no_results}", "--out", "{new}"], "pass the --workdir of a training run"),
  row("plots_out_is_file", BARE[PLOTS], ["{run}", "--out", "{file}"], "--out"),
  row("plots_empty_arg", BARE[PLOTS], [""], "pass at least one --workdir of a training run"),
  row("plots_usage", BARE[PLOTS], [], "required"),
]
# fmt: on


@dataclasses.dataclass(frozen=True)
class Works:
  """An input that must work: exit 0, `expect` on stdout, the inputs named
  in `kept` byte-identical afterwards."""

  id: str
  base: tuple[str, list[str]]
  args: list[str]
  expect: str
  kept: tuple[str, ...] = ()


# fmt: off
POSITIVE = [
  # Unicode and spaces in both paths, the workdir a symlink to an existing
  # empty dir, and k=200 > the bank's 128 images: a warning, not an error.
  Works("knn_unicode_symlink_big_k", KNN, ["--config.init_checkpoint={run_unicode}", "--workdir", "{link}"], "warning: config.eval.knn_ks asks for k=200", ("run_unicode",)),
  Works("resume_finished_via_symlink", RESUME, ["--workdir", "{run_link}"], "holds a finished run", ("run_link",)),
  Works("embed_unicode_paths", EMB, ["--checkpoint", "{run_unicode}", "--images", "{images_unicode}", "--out", "{out_unicode}/e.npz"], "Embedded 4 images", ("run_unicode", "images_unicode")),
]
# fmt: on
# Rows also run as real subprocesses (about 8 s each).
SUBPROCESS_ROWS = ("batch_0", "config_syntax", "plots_usage")


# The config of the shared tiny run, as a config file.
TINY_RUN_CONFIG = f"""import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import helpers


def get_config():
  return helpers.tiny_run_config()
"""


def _png(path: str, seed: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.RandomState(seed).randint(0, 256, (12, 12, 3))
  Image.fromarray(pixels.astype(np.uint8)).save(path)


def _write(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def _copy_run(tiny_run: str, dest: str, edit=None) -> str:
  shutil.copytree(tiny_run, dest, symlinks=True)
  if edit:
    edit(dest)
  return dest


def _edit_json(run_dir: str) -> None:
  """run_config.json describing a ResNet-34: it no longer fits the
  checkpoint, but agrees with itself."""
  path = os.path.join(run_dir, "run_config.json")
  with open(path) as f:
    payload = json.load(f)
  payload["config"]["model"]["depth"] = 34
  payload["model_signature"]["depth"] = 34
  with open(path, "w") as f:
    json.dump(payload, f)


def _remove(*names):
  def edit(run_dir):
    for name in os.listdir(run_dir):
      if any(re.fullmatch(n, name) for n in names):
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

  return edit


def _images(root: str, layout: dict[str, int], seed: int = 0) -> str:
  """`layout`: {relative folder: number of PNGs in it}."""
  for i, (folder, count) in enumerate(layout.items()):
    for j in range(count):
      _png(os.path.join(root, folder, f"img {j}.png"), seed + 10 * i + j)
  return root


def _make_inputs(tmp: str, tiny_run: str) -> dict[str, str]:
  """The inputs the rows name, as {placeholder: path}."""
  j = lambda *p: os.path.join(tmp, *p)  # noqa: E731
  os.makedirs(j("empty"))
  os.makedirs(j("new"))  # each row's {new} is new/<id>, created by no one
  os.makedirs(j("out dir ✓"))
  os.makedirs(j("out ü"))
  os.symlink(j("out dir ✓"), j("knn link"))
  split = {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1}
  for name in [f"train/a/{i}.jpg" for i in range(40)] + ["test/a/0.jpg"]:
    _write(j("corrupt", name), "not a JPEG")
  copies = {
    "run": None,
    "run_bad_json": lambda d: _write(os.path.join(d, "run_config.json"), "{"),
    "run_no_ckpt": _remove("checkpoints"),
    "run_no_results": _remove(r"results\.json", r"metrics\.jsonl", "events.*"),
    "run_edited": _edit_json,
    "run_unicode": None,
  }
  places = {"run_unicode": "ünï cödé run"}
  paths = {
    name: _copy_run(tiny_run, j(places.get(name, name)), edit)
    for name, edit in copies.items()
  }
  _copy_run(tiny_run, j("run copy ü"))
  os.symlink(j("run copy ü"), j("run link"))
  return {
    **paths,
    "tmp": tmp,
    "empty": j("empty"),
    "file": _write(j("file.txt"), "not a directory\n"),
    "texts": os.path.dirname(_write(j("texts", "train", "a", "a.txt"), "x")),
    "corrupt": j("corrupt"),
    "images": _images(j("images"), split),
    "images_unicode": _images(j("bilder ü ✓"), {"klasse ä": 2, "b c": 2}),
    "out_unicode": j("out ü"),
    "link": j("knn link"),
    "run_link": j("run link"),
    "loop": _loop(j("loop")),
    "bad_tf_index": _write(j("tf ckpt", "model.ckpt-1.index"), "not an index"),
    "syntax_py": _write(j("syntax.py"), "def get_config():\n  c = {\n  )\n"),
    "no_get_py": _write(j("no_get.py"), "def config():\n  return None\n"),
    "raises_py": _write(
      j("raises.py"), "def get_config():\n  raise ValueError('boom')\n"
    ),
    "not_dict_py": _write(j("not_dict.py"), "def get_config():\n  return 42\n"),
    "tiny_py": _write(j("tiny.py"), TINY_RUN_CONFIG),
    "linear_other": os.path.dirname(
      _write(
        j("linear_other", "training_setup.json"),
        json.dumps({"what": "linear evaluation", "steps": 1}),
      )
    ),
  }


def _loop(path: str) -> str:
  """A symlink that points at itself."""
  os.symlink(path, path)
  return path


def _fill(text: str, inputs: dict[str, str], new: str = "") -> str:
  values = {**inputs, "new": new}
  return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], text)


def _used(case_args: list[str], inputs: dict[str, str]) -> list[str]:
  """The existing inputs a row names (its watched paths)."""
  names = {m for a in case_args for m in re.findall(r"\{(\w+)\}", a)}
  return sorted(inputs[n] for n in names - {"new", "tmp"})


def _fresh_roots(argv: list[str]) -> list[str]:
  """For each --workdir / --out value that does not exist yet, its highest
  ancestor that does not exist: what must still not exist afterwards."""
  values = [
    b if a in ("--workdir", "--out") else a.split("=", 1)[1]
    for a, b in zip(argv, [*argv[1:], ""])
    if a in ("--workdir", "--out") or a.startswith(("--workdir=", "--out="))
  ]
  roots = []
  for path in filter(None, values):
    path = os.path.abspath(os.path.join(ROOT, path))
    if os.path.lexists(path):
      continue
    while not os.path.lexists(os.path.dirname(path)):
      path = os.path.dirname(path)
    roots.append(path)
  return roots


def _case_dict(r: Case | Works, inputs: dict[str, str], tmp: str) -> dict:
  """What the driver runs for row `r`, placeholders filled."""
  module, prefix = r.base
  new = os.path.join(tmp, "new", r.id)
  argv = [_fill(a, inputs, new) for a in [*prefix, *r.args]]
  env = {
    k: _fill(v, inputs) for k, v in (getattr(r, "env", None) or {}).items()
  }
  return dict(
    id=r.id,
    module=module,
    argv=argv,
    cwd=str(ROOT),
    env=env,
    watch=_used([*prefix, *r.args], inputs),
    fresh=_fresh_roots(argv),
  )


def _driver_env() -> dict[str, str]:
  """8 CPU devices, like the suite's (batch_vs_devices needs several): set
  before JAX is imported, so for the whole driver, not per row."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


def _selected(session: pytest.Session) -> set[str]:
  """Ids of the rows this session runs (all, unless `-k` or node ids pick
  some), so that running one row runs one case in the driver."""
  ids = set()
  for item in session.items:
    if os.fspath(item.path) != os.path.abspath(__file__):
      continue
    params = getattr(getattr(item, "callspec", None), "params", {})
    for value in params.values():
      ids.add(str(getattr(value, "id", value)))
  return ids


@pytest.fixture(scope="module")
def driven(request, tiny_run, tmp_path_factory):
  """(cases by id, results by id, inputs) of the selected CASES and
  POSITIVE rows, run in one driver process."""
  tmp = str(tmp_path_factory.mktemp("bad input ✓"))
  inputs = _make_inputs(tmp, tiny_run)
  rows = [p.values[0] for p in CASES] + POSITIVE
  wanted = _selected(request.session)
  cases = [_case_dict(r, inputs, tmp) for r in rows if r.id in wanted]
  with open(os.path.join(tmp, "cases.json"), "w", encoding="utf-8") as f:
    json.dump(cases, f)
  results_path = os.path.join(tmp, "results.json")
  proc = subprocess.run(
    [sys.executable, str(ROOT / "tests" / "bad_input_driver.py")]
    + [os.path.join(tmp, "cases.json"), results_path],
    cwd=ROOT,
    env=_driver_env(),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(results_path, encoding="utf-8") as f:
    results = json.load(f)
  return {c["id"]: c for c in cases}, results, inputs


def _says(line: str, expect: str | re.Pattern) -> bool:
  if isinstance(expect, str):
    return expect in line
  return bool(expect.search(line))


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, driven):
  cases, results, inputs = driven
  argv, out = cases[case.id], results[case.id]
  both = out["stdout"] + out["stderr"]
  errors = [l for l in out["stderr"].splitlines() if l.startswith("error:")]
  noise = [l for l in out["stderr"].splitlines() if l and l not in errors]
  assert len(errors) == 1 and not noise, out["stderr"][-3000:]  # (1)
  expect = case.expect
  expect = _fill(expect, inputs) if isinstance(expect, str) else expect
  assert _says(errors[0], expect), errors[0]  # (2)
  assert out["rc"] != 0, both[-3000:]  # (3)
  assert "Traceback" not in both, both[-3000:]  # (4)
  changed = [p for p, h in out["after"].items() if h != out["before"][p]]
  created = [p for p in argv["fresh"] if os.path.lexists(p)]
  assert not changed and not created, (changed, created)  # (5)


@pytest.mark.parametrize("works", POSITIVE, ids=[w.id for w in POSITIVE])
def test_must_work(works, driven):
  _, results, inputs = driven
  out = results[works.id]
  assert out["rc"] == 0, (out["stdout"] + out["stderr"])[-3000:]
  assert works.expect in out["stdout"], out["stdout"][-3000:]
  assert "error:" not in out["stderr"] and "Traceback" not in out["stderr"]
  kept = [inputs[name] for name in works.kept]
  assert all(out["after"][p] == out["before"][p] for p in kept), kept


def test_a_class_of_one_image_is_accepted(tmp_path):
  """Not a row: a class folder with a single image is valid data (the
  logistic probe keeps it for fitting, label subsets take at least one)."""
  from simclr_jax import data  # pylint: disable=import-outside-toplevel

  root = _images(str(tmp_path), {"train/a": 3, "train/b": 1, "test/b": 1})
  cfg = data.DataConfig(source="folder", data_dir=root, eval_split="test")
  info = data.dataset_info(cfg)
  assert (info.num_train, info.num_eval, info.class_names) == (4, 1, ("a", "b"))


@pytest.mark.parametrize("id_", SUBPROCESS_ROWS)
def test_driver_matches_the_command_line(id_, driven):
  """`python -m ...` prints what the driver recorded, with the same exit
  status (the driver's stand-in for a real process is faithful)."""
  case, recorded = driven[0][id_], driven[1][id_]
  proc = run_cli(*case["argv"], devices=8, module=case["module"])
  assert proc.returncode == recorded["rc"], proc.stderr[-3000:]
  assert proc.stderr == recorded["stderr"]
