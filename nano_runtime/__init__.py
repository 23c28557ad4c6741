"""nano_runtime: distill, quantize and run small language models on phones."""
__version__ = "0.1.0"

from .config import ModelConfig  # noqa: E402,F401
