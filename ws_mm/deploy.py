"""Folding WS convs into plain convs for deployment and export.

At inference ``W_hat`` is a constant, so a WS conv is exactly a plain conv
whose weight is ``W_hat``. Folding removes every trace of ws_mm from the
model: the result runs, exports to ONNX and loads without ws_mm installed.
(mmcv's conv-BN fusion reads the raw ``conv.weight``: fold first, then fuse.)
"""
import torch
from torch import nn

from .layers.conv_ws import (WS_CONVS, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                             ConvWS3d)

_PLAIN = {
    ConvWS1d: nn.Conv1d,
    ConvWS2d: nn.Conv2d,
    ConvWS3d: nn.Conv3d,
    ConvTransposeWS2d: nn.ConvTranspose2d,
}


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Turn every WS conv in ``model`` into the plain torch conv it computes.

    In place: each WS conv (``model`` itself included) becomes an instance of
    its torch base class (``nn.Conv2d`` for ``ConvWS2d``, ...) whose weight,
    the same ``Parameter``, now holds ``W_hat``. Returns ``model``. Outputs are
    unchanged up to float rounding; training is not (the folded conv no longer
    standardizes), so fold only for inference and export.
    """
    for module in model.modules():
        if not isinstance(module, WS_CONVS):
            continue
        with torch.no_grad():
            module.weight.copy_(module._standardize(module.weight))
        module.__class__ = next(_PLAIN[cls] for cls in type(module).__mro__
                                if cls in _PLAIN)
        del module.ws_variant, module.ws_eps, module._ws_cache
    return model
