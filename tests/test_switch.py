"""ws_mm.toolbox.switch.switch_layers on a real config and model."""
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from ws_mm.layers import WS_CONVS, BatchChannelNorm
from ws_mm.toolbox.switch import switch_layers

ROOT = Path(__file__).resolve().parents[1]


def test_switch_reaches_backbone_neck_and_heads():
    cfg = Config.fromfile(
        ROOT / 'configs/demo/mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-coco.py')
    before = cfg.model.to_dict()
    bcn = dict(type='BCN', num_groups=16, mode='estimate')
    switched = switch_layers(cfg.model, None, bcn)
    assert cfg.model.to_dict() == before  # a copy, the config is untouched

    init_default_scope('mmdet')
    model = MODELS.build(switched)
    for part in (model.backbone, model.neck, model.roi_head.bbox_head,
                 model.roi_head.mask_head):
        norms = [m for m in part.modules()
                 if isinstance(m, (nn.GroupNorm, BatchChannelNorm))]
        assert norms and all(isinstance(m, BatchChannelNorm) for m in norms)
        assert not any(isinstance(m, WS_CONVS) for m in part.modules())
    assert switched.backbone.norm_eval is False
