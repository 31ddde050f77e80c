"""Errors caused by the user's input. The CLI prints their one-line message and exits 2."""


class UserError(Exception):
    """Bad input (recipe, override, checkpoint, stage order, model): fixable by the user."""


class RecipeError(UserError):
    """A recipe or override failed validation; the message lists every problem found."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, foreign, too new or of the wrong stage."""


class ModelError(UserError):
    """A model name, import path or weights file cannot be used."""


class DataError(UserError):
    """A dataset name or its options cannot be used."""


class ConversionError(UserError):
    """The model cannot be turned into a supernet (untraceable, unsupported layer or op)."""


class MissingPackageError(UserError):
    """An optional package (an extra: deploy, log) that a command or setting needs is not
    installed; the message names the ``pip install`` that adds it."""


class Interrupted(Exception):
    """Ctrl-C: the current step finished and the state was saved; the CLI exits 130."""
