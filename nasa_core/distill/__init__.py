"""NASA-T, the node-free distillation trainer: ``python -m nasa_core.distill --help``."""
