"""Real CIFAR-10 on a 2-core CPU: pretraining plus evaluation in < 20 minutes.

Reads the JPEG image-folder layout (root/train/<class>/*.jpg, root/test/...),
by default from data/cifar10 under the working directory (git ignores data/),
e.g. extracted from the archive in ../shared/data:

  mkdir -p data/cifar10 && tar xzf ../shared/data/cifar10-jpg.tar.gz -C data/cifar10
  python -m simclr_jax.main --config configs/cifar10_cpu.py --workdir runs/cifar10_cpu

(elsewhere: --config.data.data_dir=/path/to/cifar10).

At the end it reports kNN (k = 200 and 20) and a logistic-regression probe on
the full 10,000-image test split for the trained encoder, a random encoder
of the same architecture and raw pixels (numbers in docs/results.md). Sized
for the time budget, not for accuracy: 16 px images (CIFAR downsampled),
ResNet-18 at a quarter width, 4 epochs. As in configs/default.py, a minimum
crop area of 0.2 learns faster in a few hundred steps than the CIFAR
recipe's 0.08; the temperature is 0.1 (the quickstart's 0.2 gave 3.2 kNN
and 1.5 linear points less here, docs/results.md). configs/cifar10.py is
the full recipe.
"""

import pathlib
import runpy

_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
  c = _default["get_config"]()
  c.data.source = "folder"
  c.data.name = ""
  c.data.data_dir = "data/cifar10"
  c.data.train_split = "train"
  c.data.eval_split = "test"

  c.epochs = 4
  c.loss.temperature = 0.1
  c.optim.warmup_epochs = 0.5
  c.log_every_steps = 50
  c.checkpoint_every_steps = 250

  c.eval.batch_size = 1000
  c.eval.compare_raw_pixels = True
  c.eval.probe_max_iters = 200  # 768-d raw pixels fit slowly otherwise
  c.linear_eval.weight_decay = 0.0  # the paper's CIFAR setting
  return c
