"""`python -m simclr_jax.main`, logging which training rows this process reads.

Used by test_distributed.py. Every local batch that `train_batches` yields is
appended to the file named by $SIMCLR_ROWS_FILE as one JSON line: a short
digest of each row's image, in row order. Batches prefetched beyond the last
step are recorded too, so readers compare only the first lines.
"""

import hashlib
import json
import os
import runpy

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from simclr_jax import data  # noqa: E402  (after the environment on purpose)

_train_batches = data.train_batches


def _recorded(*args, **kwargs):
  path = os.environ["SIMCLR_ROWS_FILE"]
  for batch in _train_batches(*args, **kwargs):
    digests = [
      hashlib.sha1(image.tobytes()).hexdigest()[:16] for image in batch["image"]
    ]
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(digests) + "\n")
    yield batch


data.train_batches = _recorded
runpy.run_module("simclr_jax.main", run_name="__main__", alter_sys=True)
