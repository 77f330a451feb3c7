"""The training layer: front-ends, models, optimisers, the training loop (compiled and eager), evaluation.

Heavy numerical dependencies (PyTorch, scikit-learn) live here; nothing here draws or serves.
"""
