"""The performance suite: our train step side by side with a PyTorch peer.

  python benchmarks/suite.py [--out runs/bench] [--settings quickstart,r18_32]
      [--dtypes float32,bfloat16] [--steps 5] [--no_torch] [--dry_run]

For every setting and dtype, in one invocation on one machine, each in its
own process (so each framework owns the cores and its thread pool):
- simclr_jax's pretraining step (benchmarks/train_step.py: on-device
  augmentation, forward, NT-Xent, online probe, LARS) with the default
  `model.conv_impl` ('auto'), and on CPUs also with XLA's own convolutions
  (`conv_impl=xla`, the alternative the CPU path replaces);
- the PyTorch peer (benchmarks/torch_peer.py, needs the `bench` extra),
  in PyTorch's default memory format and, on CPUs, channels-last;
- the temporary memory of the step with `model.remat` on and off (the last
  setting, float32);
- host input throughput (benchmarks/input_throughput.py) at 224 px.
Writes OUT/results.json (machine, versions, command, every measurement)
and OUT/table.md, and prints the table. `--dry_run` runs each part once at a tiny
size, for one setting and dtype (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (depth, width, image_size, batch_size, cifar_stem, head_layers)
SETTINGS = {
  "quickstart": (18, 0.25, 16, 256, True, 2),  # configs/default.py
  "r18_32": (18, 1.0, 32, 128, True, 2),  # ResNet-18 CIFAR at 32 px
  "r50_224": (50, 1.0, 224, 32, False, 2),  # ImageNet ResNet-50
}
DRY_RUN = (18, 0.125, 16, 8, True, 2)
PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "tensorflow-cpu",
  "tensorflow",
  "torch",
  "torchvision",
  "lightly",
)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs a benchmark process (in `env`, default ours); its last stdout
  line is a JSON object."""
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " / ".join(tail) or f"exit status {proc.returncode}"}
  return json.loads(lines[-1])


def jax_step(setting: tuple, dtype: str, steps: int, **extra: Any) -> dict:
  depth, width, size, batch, cifar, head = setting
  overrides = {
    "model.depth": depth,
    "model.width_multiplier": width,
    "data.image_size": size,
    "batch_size": batch,
    "model.cifar_stem": cifar,
    "model.proj_head_layers": head,
    "model.half_precision": dtype == "bfloat16",
    **extra,
  }
  return _run(
    [
      sys.executable,
      os.path.join(HERE, "train_step.py"),
      "--json",
      f"--steps={steps}",
      "--config",
      os.path.join(ROOT, "configs/default.py"),
    ]
    + [f"--config.{k}={v}" for k, v in overrides.items()]
  )


def torch_step(
  setting: tuple,
  dtype: str,
  steps: int,
  device: str,
  channels_last: bool = False,
) -> dict:
  depth, width, size, batch, cifar, head = setting
  cmd = [
    sys.executable,
    os.path.join(HERE, "torch_peer.py"),
    f"--depth={depth}",
    f"--width={width}",
    f"--image_size={size}",
    f"--batch_size={batch}",
    f"--head_layers={head}",
    f"--steps={steps}",
    f"--device={device}",
  ]
  cmd += ["--cifar_stem"] * cifar + ["--bf16"] * (dtype == "bfloat16")
  return _run(cmd + ["--channels_last"] * channels_last)


def torch_device() -> str | None:
  """'cuda' or 'cpu' where torch is installed, else None."""
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    return None
  return "cuda" if torch.cuda.is_available() else "cpu"


def machine() -> dict[str, Any]:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(
        ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")
      )
  except (OSError, StopIteration):
    pass
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {
    "cpu": cpu,
    "cores": os.cpu_count(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "versions": versions,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _fmt(r: dict | None, key: str = "images_per_s") -> str:
  if not r:
    return "-"
  return r["error"][:60] if "error" in r else f"{r[key]:.1f}"


def _ratio(ours: dict, peer: dict | None) -> str:
  ok = peer and "error" not in peer and "error" not in ours
  return f"{ours['images_per_s'] / peer['images_per_s']:.2f}" if ok else "-"


def table(rows: list[dict], memory: list[dict], inputs: dict | None) -> str:
  out = [
    "| setting | dtype | simclr_jax img/s (views/s) | compile s | "
    "XLA-conv img/s | PyTorch img/s | ratio | PyTorch channels-last "
    "img/s | ratio |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    ours = r["simclr_jax"]
    views = "" if "error" in ours else f" ({ours['views_per_s']:.0f})"
    compile_s = "-" if "error" in ours else f"{ours['compile_s']:.1f}"
    out.append(
      f"| {r['setting']} | {r['dtype']} | {_fmt(ours)}{views} | {compile_s} | "
      f"{_fmt(r.get('xla_conv'))} | {_fmt(r.get('pytorch'))} | "
      f"{_ratio(ours, r.get('pytorch'))} | {_fmt(r.get('pytorch_cl'))} | "
      f"{_ratio(ours, r.get('pytorch_cl'))} |"
    )
  for m in memory:
    if "error" not in m:
      out.append(
        f"\nStep temporary memory, {m['setting']} {m.get('dtype', 'float32')}, "
        f"model.remat={m['remat']}: {m['temp_bytes'] / 2**20:.0f} MiB."
      )
  if inputs and "error" not in inputs:
    out.append(
      f"\nHost input at {inputs['size']} px, one process on "
      f"{inputs['cores']} cores: image folder of JPEGs "
      f"{inputs['folder_images_per_s']:.0f} img/s "
      f"({inputs['folder_images_per_s_per_core']:.0f} per core); tfds "
      f"(mock examples, no JPEG decoding) {inputs['tfds_mock_images_per_s']:.0f} img/s."
    )
    step = next(
      (
        r["simclr_jax"]
        for r in rows
        if r["setting"] == "r50_224" and "error" not in r["simclr_jax"]
      ),
      None,
    )
    if step:
      out.append(
        f"The r50_224 step consumes {step['images_per_s']:.1f} img/s: "
        f"input/consumption = {inputs['folder_images_per_s'] / step['images_per_s']:.1f}x."
      )
  return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="runs/bench")
  p.add_argument("--settings", default="")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--no_input", action="store_true")
  p.add_argument("--dry_run", action="store_true")
  args = p.parse_args(argv)
  import jax  # noqa: PLC0415  (only for the backend name)

  backend = jax.default_backend()
  names = (
    args.settings.split(",")
    if args.settings
    else (["quickstart", "r18_32"] if backend == "cpu" else list(SETTINGS))
  )
  unknown = [n for n in names if n not in SETTINGS]
  if unknown:
    p.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
  if args.dry_run:  # one setting, one dtype: the parts, not the numbers
    names, args.dtypes = names[:1], args.dtypes.split(",")[0]
  steps = 1 if args.dry_run else args.steps
  device = None if args.no_torch else torch_device()
  rows, memory = [], []
  for name in names:
    setting = DRY_RUN if args.dry_run else SETTINGS[name]
    for dtype in args.dtypes.split(","):
      print(f"[suite] {name} {dtype} ...", flush=True)
      row = {
        "setting": name,
        "dtype": dtype,
        "shape": setting,
        "simclr_jax": jax_step(setting, dtype, steps),
      }
      if backend == "cpu" and not args.dry_run:
        row["xla_conv"] = jax_step(
          setting, dtype, steps, **{"model.conv_impl": "xla"}
        )
      if device:
        row["pytorch"] = torch_step(setting, dtype, steps, device)
        if device == "cpu" and not args.dry_run:
          row["pytorch_cl"] = torch_step(setting, dtype, steps, device, True)
      rows.append(row)
  # Remat on the largest setting run: where activations dominate the step's
  # temporary memory (at 16 px the patch buffers and the loss do).
  for remat in (True,) if args.dry_run else (False, True):
    r = jax_step(
      DRY_RUN if args.dry_run else SETTINGS[names[-1]],
      "float32",
      1,
      **{"model.remat": remat},
    )
    memory.append(
      {"setting": names[-1], "dtype": "float32", "remat": remat, **r}
    )
  inputs = None
  if not args.no_input:
    print("[suite] host input ...", flush=True)
    small = ["--size=32", "--files=32", "--batch=8", "--batches=2"]
    inputs = _run(
      [sys.executable, os.path.join(HERE, "input_throughput.py"), "--json"]
      + (small if args.dry_run else [])
    )
  result = {
    "command": " ".join(
      [os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])
    ),
    "backend": backend,
    "machine": machine(),
    "rows": rows,
    "memory": memory,
    "input": inputs,
  }
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  text = table(rows, memory, inputs)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(text)
  print(text)
  print(f"[suite] wrote {args.out}/results.json and table.md")
  return result


if __name__ == "__main__":
  main()
