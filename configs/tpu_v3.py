"""The ImageNet ResNet-50 recipe sized for a TPU v3 slice (v3-32: 32 cores).

Global batch 4096 = 128 per core on 32 cores; on a v3-8 the same batch is
512 per core, which fits in bfloat16 but leaves little headroom. bfloat16
compute with float32 parameters, BN statistics, loss and optimiser state;
checkpoints every 2,500 steps so a preempted slice loses little work. Point
`--config.data.data_dir` at the tfds directory holding `imagenet2012`
(typically a gs:// bucket in the slice's region).
"""

import pathlib
import runpy

_imagenet = runpy.run_path(str(pathlib.Path(__file__).with_name("imagenet.py")))


def get_config():
  c = _imagenet["get_config"]()
  c.model.half_precision = True
  c.checkpoint_every_steps = 2500
  c.eval.batch_size = 4096
  return c
