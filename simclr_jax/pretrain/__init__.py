"""SimCLR pretraining: the set-up (`setup`), the jitted step (`step`) and
the job that runs it (`run.train_and_evaluate`)."""

from simclr_jax.pretrain.run import train_and_evaluate
from simclr_jax.pretrain.setup import TrainSetup

__all__ = ["TrainSetup", "train_and_evaluate"]
