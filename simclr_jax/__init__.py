"""simclr_jax: SimCLR v1/v2 self-supervised pretraining in JAX/Flax."""

__version__ = "0.1.0"
