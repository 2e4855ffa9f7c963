"""Old import path of ``convnext_backbone.checkpoints.imagenet``, kept for code that imports it."""
from .imagenet import *  # noqa: F401,F403
