"""The package version, in a module of its own so that any layer can read it without loading the others."""

__version__: str = "0.1.0"
