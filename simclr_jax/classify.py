"""Deprecated alias of `simclr_jax.eval.supervised`, kept for one release."""

from simclr_jax._moved import alias

alias(__name__, "simclr_jax.eval.supervised")
