"""The command line: the Typer app (``app``), its tables (``views``), plots and listings.

Nothing below the CLI imports from here: stages return plain data that these modules print.
"""

from mpsctl.cli.app import app, main

__all__ = ["app", "main"]
