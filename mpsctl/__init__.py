"""mpsctl: mixed-precision search, export, fine-tuning and NE16 refinement for CNNs."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: str):
    """Rebuild the runnable model of any stage checkpoint, in eval mode."""
    from mpsctl.stages.state import load_model

    return load_model(path)
