"""A stand-in for Cellpose-SAM's network, for tests and benchmarks without the real weights.

Its "flows" are the gradient of the blurred darkness of the image, which points to the
centre of dark blobs, and its cell probability is the blurred darkness. Saved as a
model file and swapped in for ``cellpose.models.CPSAM``, it lets Cellpose's own
``CellposeModel`` run normalisation, tiling, flow dynamics and mask building for real.
It is not a trained model: its masks only find dark round blobs.
"""

from __future__ import annotations


def stand_in_network_class() -> type:
    """Return the stand-in network class, a subclass of Cellpose 4's ``BaseModel``.

    The class is built on call, so importing this module does not import torch or
    Cellpose.
    """
    import torch
    from cellpose.vit import BaseModel
    from torch import nn
    from torch.nn import functional as F

    class DarkBlobFlowNet(BaseModel):
        """Stand-in for Cellpose's CPSAM network: flows towards the centres of dark blobs."""

        def __init__(self, dtype=torch.float32, sigma: float = 3.0):
            super().__init__(dtype=dtype)
            radius = int(3 * sigma)
            offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
            gauss = torch.exp(-(offsets**2) / (2 * sigma**2))
            gauss /= gauss.sum()
            # Cross-correlation with +x G(x) / sigma^2 is the derivative of the Gaussian-blurred image.
            derivative = offsets / sigma**2 * gauss
            kernels = torch.stack(
                [torch.outer(gauss, gauss), torch.outer(derivative, gauss), torch.outer(gauss, derivative)]
            )
            self.kernels = nn.Parameter(kernels[:, None], requires_grad=False)
            self.gains = nn.Parameter(torch.tensor([40.0, 12.0, 0.45]), requires_grad=False)
            # Cellpose 4 rejects model files without the W2 weights of its readout layer.
            self.W2 = nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x):
            darkness = 1.0 - x.float().mean(dim=1, keepdim=True)
            out = F.conv2d(darkness, self.kernels, padding=self.kernels.shape[-1] // 2)
            blurred, grad_y, grad_x = out[:, 0:1], out[:, 1:2], out[:, 2:3]
            flows = 5.0 * torch.tanh(self.gains[0] * torch.cat([grad_y, grad_x], dim=1))
            probability = self.gains[1] * (blurred - self.gains[2])
            style = torch.zeros((x.shape[0], 256), device=x.device)
            return torch.cat([flows, probability], dim=1).to(x.dtype), style

    return DarkBlobFlowNet
