# No switch: mmdet's stock Mask R-CNN R-50-FPN model (BN in the backbone,
# frozen and in eval mode; no normalization in FPN and heads;
# Shared2FCBBoxHead). Here so that the BN baseline is built like the other
# configs: [switch snippet, dataset, schedule, runtime].
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../ws_mm_imports.py']
