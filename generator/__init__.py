"""sigmae-gen: the code generator."""
__version__ = "0.1.0"
