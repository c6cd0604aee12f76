"""dispatcher: a compliant, multi-channel reminder dispatcher for debt collection."""

__version__ = "0.1.0"
