"""Your own image folder on a CPU: pretraining plus evaluation in minutes.

  python -m simclr_jax.main --config configs/folder_cpu.py \
    --workdir runs/mine --config.data.data_dir=DIR

(DIR defaults to data/images under the working directory; git ignores
data/). DIR holds JPEG, PNG, BMP or GIF files of any size, in one of three
layouts:

  DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg   evaluated on test/
  DIR/<class>/*.jpg     a fixed tenth of each class (chosen by file name) is
                        held out of training and evaluated on
  DIR/*.jpg             no labels: trains; the evaluation is skipped

Sized for about 10,000 images in 10-15 minutes on 2 CPU cores, not for
accuracy: 32 px images (shorter side resized, centre crop), ResNet-18 at a
quarter width, batch 256, 4 epochs, with the other settings of
configs/default.py. The run ends with kNN (k = 200, 20) and logistic-probe
accuracy of the trained encoder, a random one and raw pixels. Training time
grows with the number of images x epochs and with image_size squared.
"""

import pathlib
import runpy

import ml_collections

_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config() -> ml_collections.ConfigDict:
  """configs/default.py, reading the image folder given as data_dir."""
  c = _default["get_config"]()
  c.data.source = "folder"
  c.data.name = ""
  c.data.data_dir = "data/images"  # --config.data.data_dir=DIR
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32

  c.epochs = 4
  c.optim.warmup_epochs = 0.5
  c.log_every_steps = 20
  c.checkpoint_every_steps = 100

  c.eval.batch_size = 512
  c.eval.compare_raw_pixels = True
  c.eval.probe_max_iters = 200  # 3072-d raw pixels fit slowly otherwise
  c.eval.max_train_examples = 20000  # bank / probe set of a larger folder
  return c
