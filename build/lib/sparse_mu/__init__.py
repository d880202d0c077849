"""sparse_mu: machine unlearning with model sparsity (prune first, then unlearn)."""

__version__ = "0.1.0"
