"""SLURM job arrays and TPU VM commands written for a sweep."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from simclr_jax.sweep import __main__ as cli
from simclr_jax.sweep import cluster
from simclr_jax.sweep import spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "configs", "sweeps", "imagenet_batch_epochs.py")


@pytest.fixture(scope="module")
def sweep():
  return spec.load(SWEEP)


def _cases(text):
  """{array index: (point name, done check, srun command)} of a script."""
  found = re.findall(
    r"^  (\d+)\)  # (\S+)\n    (if .*)\n    srun (.*) ;;$", text, re.M
  )
  return {int(i): (name, done, cmd) for i, name, done, cmd in found}


def test_slurm_array_has_one_task_per_point(sweep, tmp_path):
  opts = cluster.SlurmOptions(
    nodes=4, gpus_per_node=8, time="12:00:00", partition="gpu", max_parallel=3
  )
  points = sweep.select([])
  text = cluster.slurm_script(sweep, str(tmp_path), points, opts)
  assert "#SBATCH --array=0-23%3\n" in text
  assert "#SBATCH --nodes=4\n" in text and "#SBATCH --partition=gpu\n" in text
  assert "#SBATCH --ntasks-per-node=1\n" in text
  assert "#SBATCH --gpus-per-node=8\n" in text
  assert "#SBATCH --time=12:00:00\n" in text
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 " in text
  cases = _cases(text)
  assert sorted(cases) == list(range(24))
  for i, p in enumerate(points):
    name, done, cmd = cases[i]
    assert name == p.name
    # The ordinary multi-node command: every task's srun trains one point.
    assert shlex.split(cmd) == p.command(sweep.base_config, str(tmp_path))
    results = os.path.join(str(tmp_path), p.name, "results.json")
    assert done.startswith(f"if [ -f {shlex.quote(results)} ]")
    assert done.endswith("exit 0; fi")
  subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def _run_task(text, index, tmp_path):
  """Runs array task `index` with `srun` replaced by a recorder."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  log = tmp_path / "srun.log"
  (bin_dir / "srun").write_text(f'#!/bin/bash\necho "$@" >> {log}\n')
  (bin_dir / "srun").chmod(0o755)
  env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(index))
  env["PATH"] = f"{bin_dir}:{env['PATH']}"
  out = subprocess.run(
    ["bash", "-c", text.replace(". .venv/bin/activate", "true")],
    env=env,
    capture_output=True,
    text=True,
  )
  return out, log.read_text() if log.exists() else ""


def test_slurm_task_skips_a_done_point_and_runs_the_others(sweep, tmp_path):
  points = sweep.select(
    ["batch_size=256,epochs=100", "batch_size=256,epochs=200"]
  )
  sweepdir = tmp_path / "sweep"
  text = cluster.slurm_script(
    sweep, str(sweepdir), points, cluster.SlurmOptions()
  )
  (sweepdir / points[0].name).mkdir(parents=True)
  (sweepdir / points[0].name / "results.json").write_text("{}")
  out, ran = _run_task(text, 0, tmp_path)
  assert out.returncode == 0 and "is done" in out.stdout and ran == ""
  out, ran = _run_task(text, 1, tmp_path)
  assert out.returncode == 0, out.stderr
  assert f"--workdir {sweepdir}/{points[1].name}" in ran
  out, _ = _run_task(text, 2, tmp_path)
  assert out.returncode == 1 and "no point for array task 2" in out.stdout


def test_tpu_script_runs_every_point_on_all_workers(sweep):
  points = sweep.select([])[:3]
  text = cluster.tpu_script(sweep, "~/bucket/sw", points, setup="cd ~/x")
  calls = [l for l in text.splitlines() if l.startswith("gcloud")]
  assert len(calls) == 3
  for line, p in zip(calls, points):
    argv = shlex.split(line)
    assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert "--worker=all" in argv
    remote = argv[argv.index("--command") + 1]
    assert remote == "cd ~/x && " + shlex.join(
      p.command(sweep.base_config, "~/bucket/sw")
    )
  subprocess.run(["bash", "-n"], input=text, text=True, check=True)
  env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE")}
  out = subprocess.run(["bash", "-c", text], env=env, capture_output=True)
  assert out.returncode != 0 and b"set TPU_NAME" in out.stderr


def test_cli_writes_script_and_manifest_and_checks_devices(tmp_path, capsys):
  sweepdir = tmp_path / "sw"
  rc = cli.main(
    ["slurm", SWEEP, "--sweepdir", str(sweepdir), "--nodes", "2", "--only",
     "batch_size=512,epochs=400"]
  )  # fmt: skip
  assert rc == 0
  assert f"sbatch {sweepdir}/sweep.sbatch" in capsys.readouterr().out
  assert "#SBATCH --array=0-0\n" in (sweepdir / "sweep.sbatch").read_text()
  manifest = json.loads((sweepdir / "sweep.json").read_text())
  assert len(manifest["points"]) == 24
  # A batch of 256 does not divide over 3 nodes x 8 GPUs.
  rc = cli.main(
    ["slurm", SWEEP, "--sweepdir", str(tmp_path / "b"), "--nodes", "3"]
  )
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith("error: point batch_size=256,epochs=100:")
  assert not (tmp_path / "b").exists()
  rc = cli.main(
    ["tpu", SWEEP, "--sweepdir", str(tmp_path / "t"), "--devices", "32",
     "--hosts", "4"]
  )  # fmt: skip
  assert rc == 0 and (tmp_path / "t" / "tpu_sweep.sh").exists()


def test_cli_usage_errors_exit_2():
  out = subprocess.run(
    [sys.executable, "-m", "simclr_jax.sweep", "run", SWEEP],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert out.returncode == 2 and "--sweepdir" in out.stderr
