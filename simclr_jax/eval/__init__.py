"""How an encoder is judged.

- `base`: the `Evaluator` protocol (`run(variables) -> EvalResult`), the
  `EvalContext` every evaluator shares, and `FeatureEvaluator` for the
  judges of frozen features.
- `registry`: the evaluators a downstream `config.mode` can name.
- One module per evaluator: `knn` (weighted cosine kNN), `logistic`
  (L-BFGS logistic regression on frozen features), `linear` (the paper's
  linear evaluation: SGD on augmented images), `finetune` (semi-supervised
  fine-tuning); `supervised` holds what `linear` and `finetune` share.
- `frozen`: the end-of-pretraining rows (trained / random / raw pixels);
  `monitor`: the periodic kNN monitor during pretraining.
- `features`: feature extraction and BN recalibration; `downstream`: the
  job behind `python -m simclr_jax.main --config.mode=...`.
"""
