import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values, so that layer scales (1e-6 at init) and GRN (zero at
    init) do not hide differences in the branches they multiply."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, scale / max(1, param[0].numel() ** 0.5) if param.dim() > 1 else scale)
    return model
