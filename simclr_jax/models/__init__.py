"""SimCLR networks: ResNet backbone, projection head and linear-eval head."""

from simclr_jax.models.heads import FineTuneModel
from simclr_jax.models.heads import ProjectionHead
from simclr_jax.models.heads import SimCLRModel
from simclr_jax.models.heads import SupervisedHead
from simclr_jax.models.heads import finetune_model
from simclr_jax.models.heads import init_from_pretrained
from simclr_jax.models.resnet import ResNet

__all__ = [
  "ResNet",
  "ProjectionHead",
  "SupervisedHead",
  "SimCLRModel",
  "FineTuneModel",
  "finetune_model",
  "init_from_pretrained",
]
