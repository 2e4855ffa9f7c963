"""Old import path of ``convnext_backbone.engine.runner``, kept for code that imports it."""
from ..engine.runner import *  # noqa: F401,F403
