"""Folding WS convs into plain convs for deployment and export.

At inference ``W_hat`` is a constant, so a WS conv is exactly a plain conv
whose weight is ``W_hat``. Folding removes every trace of ws_mm from the
model: the result runs, exports to ONNX and loads without ws_mm installed.
(mmcv's conv-BN fusion reads the raw ``conv.weight``: fold first, then fuse.)
"""
from torch import nn

from .layers.conv_ws import WS_CONVS


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Turn every WS conv in ``model`` into the plain torch conv it computes.

    In place: each WS conv (``model`` itself included) becomes an instance of
    its torch base class (``nn.Conv2d`` for ``ConvWS2d``, ...) whose weight,
    the same ``Parameter``, now holds ``W_hat`` (each WS conv's ``fold_``).
    Returns ``model``. Outputs are unchanged up to float rounding; training
    is not (the folded conv no longer standardizes), so fold only for
    inference and export.
    """
    for module in list(model.modules()):
        if isinstance(module, WS_CONVS):
            module.fold_()
    return model
