"""mpsctl: mixed-precision search, export, fine-tuning and NE16 refinement for CNNs."""

from mpsctl.version import __version__

__all__ = ["__version__", "load"]


def load(path: str):
    """Rebuild the runnable model of any stage checkpoint, in eval mode."""
    from mpsctl.checkpoint.state import load_model

    return load_model(path)
