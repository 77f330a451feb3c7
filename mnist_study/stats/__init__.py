"""The statistics layer: summaries and tests over seeds, the claim-check grammar, claims, comparisons.

`inference` knows nothing about experiments; `checks`, `claims` and `compare` apply it to runs' figures.
"""
