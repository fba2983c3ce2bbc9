"""Encoders and heads of SimCLR: ResNet backbone, projection and linear heads."""

from simclr_jax.models.heads import ProjectionHead, SimCLRModel, SupervisedHead
from simclr_jax.models.resnet import ResNet

__all__ = ["ResNet", "ProjectionHead", "SupervisedHead", "SimCLRModel"]
