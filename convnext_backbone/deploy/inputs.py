"""The image as the exported graphs take it, (1, H, W, 3) uint8 in the order the pipeline reads
(BGR), turned into the model's input as mmengine's / mmseg's data preprocessors do it: channels
swapped to RGB if the config says so, then mean and std. Shared by the export wrappers
(``detector``, ``one_stage``, ``detr``, ``segmentor``); the padding after it differs between
them and stays theirs."""
from __future__ import annotations

import torch
from torch import nn


def swaps_channels(preprocessor: nn.Module) -> bool:
    """Whether the data preprocessor turns BGR into RGB (mmseg's and mmengine's names)."""
    return bool(getattr(preprocessor, 'channel_conversion',
                        getattr(preprocessor, '_channel_conversion', False)))


class ImageInput(nn.Module):
    """uint8 (1, H, W, 3) -> normalised float (1, 3, H, W), as ``preprocessor`` does it.

    Args:
        preprocessor (nn.Module): The model's data preprocessor; its mean and std are copied.
    """

    def __init__(self, preprocessor: nn.Module) -> None:
        super().__init__()
        self.bgr_to_rgb = swaps_channels(preprocessor)
        normalize = bool(preprocessor._enable_normalize)
        self.register_buffer('mean', preprocessor.mean.detach().clone().reshape(1, -1, 1, 1)
                             if normalize else torch.zeros(1, 3, 1, 1))
        self.register_buffer('std', preprocessor.std.detach().clone().reshape(1, -1, 1, 1)
                             if normalize else torch.ones(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()  # (1, H, W, 3) -> (1, 3, H, W)
        if self.bgr_to_rgb:
            x = x[:, [2, 1, 0]]
        return (x - self.mean) / self.std
