"""One command for one GPU or TPU chip: throughput, input, and a real run.

  python benchmarks/accelerator.py [--out runs/accelerator] [--dry_run]
      [--cifar10 ../shared/data/cifar10-jpg.tar.gz]

Runs, in about 8 minutes on one modern chip:
1. ResNet-50 at 224 px in bfloat16 at the largest per-chip batch that fits
   (tried from 512 down), and the PyTorch peer at that batch if torch is
   installed (benchmarks/suite.py's measurements), and the step's temporary
   memory at that batch with `model.remat` off and on;
2. ResNet-18 CIFAR at 32 px in bfloat16 and float32, with the peer;
3. host input throughput at 224 px (benchmarks/input_throughput.py);
4. a short real CIFAR-10 pretraining (configs/cifar10.py on the JPEG folders
   of the archive given by --cifar10, batch 512, `--train_steps` steps) and
   its kNN accuracy on the test split.
Writes OUT/results.json and OUT/table.md. `--dry_run` runs each part for
one step at a tiny size on whatever backend there is (a CPU in CI), and the
pretraining on the built-in dataset, so the script itself stays tested.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

BATCHES = (512, 384, 256, 128, 64, 32)


def largest_batch(dtype: str, steps: int, dry_run: bool) -> tuple[int, dict]:
  """The largest ResNet-50 batch whose step compiles and runs."""
  depth, width, size, _, cifar, head = suite.SETTINGS["r50_224"]
  for batch in (8,) if dry_run else BATCHES:
    shape = (
      (18, 0.125, 16, batch, True, 2)
      if dry_run
      else (depth, width, size, batch, cifar, head)
    )
    r = suite.jax_step(shape, dtype, steps)
    print(
      f"[accelerator] r50_224 batch {batch}: "
      f"{r.get('images_per_s', r.get('error'))}",
      flush=True,
    )
    if "error" not in r:
      return batch, r
  return 0, r


def pretrain(out: str, archive: str, steps: int, dry_run: bool) -> dict:
  """A short pretraining through the CLI; its kNN accuracy and time."""
  workdir = os.path.join(out, "cifar10_run")
  if dry_run:
    args = [
      "--config",
      "configs/default.py",
      "--config.train_steps=2",
      "--config.batch_size=16",
      "--config.data.builtin_train_examples=64",
      "--config.data.builtin_eval_examples=32",
      "--config.eval.batch_size=32",
      "--config.model.width_multiplier=0.125",
      "--config.eval.linear_probe=False",
      "--config.eval.compare_random_init=False",
      "--config.eval.knn_ks=(5,)",
    ]
  else:
    root = os.path.join(out, "cifar10")
    if not os.path.isdir(os.path.join(root, "train")):
      if not os.path.isfile(archive):
        return {"error": f"{archive} not found; pass --cifar10"}
      with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    sub = [
      d
      for d in os.listdir(root)
      if os.path.isdir(os.path.join(root, d, "train"))
    ]
    data_dir = os.path.join(root, sub[0]) if sub else root
    args = [
      "--config",
      "configs/cifar10.py",
      f"--config.train_steps={steps}",
      "--config.data.source=folder",
      "--config.data.name=",
      f"--config.data.data_dir={data_dir}",
      "--config.data.eval_split=test",
      "--config.optim.warmup_epochs=1",
      "--config.eval.linear_probe=False",
    ]
  t0 = time.perf_counter()
  proc = subprocess.run(
    [sys.executable, "-m", "simclr_jax.main", *args, f"--workdir={workdir}"],
    cwd=suite.ROOT,
    capture_output=True,
    text=True,
  )
  wall = time.perf_counter() - t0
  path = os.path.join(workdir, "results.json")
  if proc.returncode or not os.path.isfile(path):
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
  with open(path) as f:
    results = json.load(f)
  return {
    "wall_s": wall,
    "steps": results["checkpoint"]["step"],
    "metrics": results["metrics"],
  }


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="runs/accelerator")
  p.add_argument("--cifar10", default="../shared/data/cifar10-jpg.tar.gz")
  p.add_argument("--train_steps", type=int, default=500)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dry_run", action="store_true")
  args = p.parse_args(argv)
  import jax  # noqa: PLC0415

  steps = 1 if args.dry_run else args.steps
  device = suite.torch_device()
  rows = []
  batch, r50 = largest_batch("bfloat16", steps, args.dry_run)
  row = {
    "setting": f"r50_224 (batch {batch})",
    "dtype": "bfloat16",
    "simclr_jax": r50,
  }
  if device and batch:
    shape = suite.DRY_RUN if args.dry_run else (50, 1.0, 224, batch, False, 2)
    row["pytorch"] = suite.torch_step(shape, "bfloat16", steps, device)
  rows.append(row)
  memory = []
  if batch:  # remat's effect where activations dominate (XLA's analysis)
    shape = suite.DRY_RUN if args.dry_run else (50, 1.0, 224, batch, False, 2)
    for remat in (False, True):
      r = suite.jax_step(shape, "bfloat16", 1, **{"model.remat": remat})
      memory.append(
        {"setting": row["setting"], "dtype": "bfloat16", "remat": remat, **r}
      )
  for dtype in ("bfloat16", "float32"):
    shape = suite.DRY_RUN if args.dry_run else suite.SETTINGS["r18_32"]
    row = {
      "setting": "r18_32",
      "dtype": dtype,
      "simclr_jax": suite.jax_step(shape, dtype, steps),
    }
    if device:
      row["pytorch"] = suite.torch_step(shape, dtype, steps, device)
    rows.append(row)
  small = ["--size=32", "--files=32", "--batch=8", "--batches=2"]
  inputs = suite._run(
    [sys.executable, os.path.join(suite.HERE, "input_throughput.py"), "--json"]
    + (small if args.dry_run else [])
  )
  run = pretrain(args.out, args.cifar10, args.train_steps, args.dry_run)
  text = suite.table(rows, memory, inputs)
  if "error" in run:
    text += f"\nCIFAR-10 pretraining failed: {run['error']}\n"
  else:
    knn = {
      k: v
      for k, v in run["metrics"].get("trained", {}).items()
      if k.startswith("knn")
    }
    text += (
      f"\nCIFAR-10 pretraining, {run['steps']} steps: {run['wall_s']:.0f} s "
      f"wall (compilation and evaluation included), trained encoder "
      + ", ".join(f"{k} {100 * v:.1f}%" for k, v in knn.items())
      + ".\n"
    )
  result = {
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "machine": suite.machine(),
    "rows": rows,
    "memory": memory,
    "input": inputs,
    "pretrain": run,
    "command": " ".join(["benchmarks/accelerator.py"] + (argv or sys.argv[1:])),
  }
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(text)
  print(text)
  return result


if __name__ == "__main__":
  main()
