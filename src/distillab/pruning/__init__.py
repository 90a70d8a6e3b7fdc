"""Pruning: importance scores, cuts (layers, heads, neurons, weights) and healing loops.

- ``layer_scores``: how much each whole decoder layer matters (Block Influence, angular distance,
  lens-KL from one calibration pass; perplexity/benchmark drop by removing one layer at a time).
- ``weight_scores``: per-weight importance (magnitude, gradient, Taylor, Wanda).
- ``unstructured``: masks at a target sparsity (global or per layer) and 2:4.
- ``width``: attention heads (grouped-query aware) and MLP neurons -> a smaller dense model.
- ``ild``: iterative layer-wise distillation (remove, heal, rescore, repeat; resumable).
Removing whole layers is ``models/surgery.py::remove_layers``.
"""
