"""Old import path of the tools' helpers (now ``convnext_backbone.cli``) and of the
``NonFiniteLossHook`` (now ``convnext_backbone.engine.hooks``), kept for code that imports it."""
from .cli import *  # noqa: F401,F403
from .engine.hooks import NonFiniteLossHook  # noqa: F401
from .engine.runner import config_dataset_meta  # noqa: F401
from .errors import DeviceError  # noqa: F401
