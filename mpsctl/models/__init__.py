"""Models by name: built-in tiny-ML CNNs, torchvision's models, or the user's own module."""

from mpsctl.models import kws, mobilenet, resnet8, small_cnn  # noqa: F401  (register the built-ins)
from mpsctl.models.registry import available_models, build_model, register_model

__all__ = ["available_models", "build_model", "register_model"]
