"""The command line; see :mod:`benchkit.cli.main`."""
