"""Old import path of ``convnext_backbone.data.demo``, kept for code that imports it."""
from .data.demo import *  # noqa: F401,F403
