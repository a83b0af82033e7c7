"""Subcommands of ``ssd-mobilenet``: every public module here defines ``register(subparsers)``."""
