"""Diagnostics: measurements of a model that commands and training callbacks share.

activations.py: per-layer activation statistics (mean, std, dead and saturated units) of a forward pass,
recorded by forward hooks as device tensors and read back with one host transfer.
"""
