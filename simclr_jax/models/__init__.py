"""SimCLR networks: ResNet backbone, projection head and linear-eval head."""

from simclr_jax.models.heads import ProjectionHead, SimCLRModel, SupervisedHead
from simclr_jax.models.resnet import ResNet

__all__ = ["ResNet", "ProjectionHead", "SupervisedHead", "SimCLRModel"]
