# Import ws_mm before the model is built: it registers ConvWS (ws_mm's
# drop-in for mmcv's), ConvWS1d/2d/3d, ConvTransposeWS2d and BCN in mmengine's
# root MODELS registry, so they resolve under mmdet's and mmseg's scopes.
# Every config of this repository inherits this file (through a switch
# snippet under switch/).
custom_imports = dict(imports=['ws_mm'], allow_failed_imports=False)
