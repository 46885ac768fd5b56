"""The ``vitsearch`` command: one module per command group; :func:`main` is the entry point."""

from vitsearch.search.cli.main import main

__all__ = ["main"]
