"""The Hydra configs, shipped with the package (Hydra finds an installed config folder as a module)."""
