"""Old import path of ``convnext_backbone.engine.layer_decay``, kept for code that imports it."""
from .engine.layer_decay import *  # noqa: F401,F403
