"""NASA (Negative-Away Steer Attention): the torch math (``attention``), ComfyUI family adapters
(``adapters``), and later the NASA-T trainer. Only ``adapters`` imports ComfyUI."""
from .attention import NASAInputError, check_alpha, nasa_attention, negative_attention, sdpa_attention, steer_away

__all__ = ["NASAInputError", "check_alpha", "nasa_attention", "negative_attention", "sdpa_attention", "steer_away"]
