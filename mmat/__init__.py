"""mmat: multimodal agent tuning as a declarative DSPy program."""
__version__ = "0.1.0"
