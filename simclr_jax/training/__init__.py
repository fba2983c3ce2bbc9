"""What every training run shares: the train state and the step loop.

Pretraining (`simclr_jax.pretrain`), fine-tuning and linear evaluation
(`simclr_jax.eval`) all train a `state.TrainState` with `loop.run_steps`.
"""
