# BCN+WS "all" for DeepLabV3: the GN+WS switch (deeplabv3_gn-ws-all.py) with
# BCN where GN is, on top of mmseg's DeepLabV3 R-50-D8 model.
# - BCN in 'estimate' mode, the micro-batch form (1-2 images per process).
#   (The authors' segmentation code ran BCN's first stage on SyncBN batch
#   statistics at large per-GPU batches: that is mode='batch', sync_bn=True,
#   GPU only. 'estimate' averages its statistics across ranks on any backend.)
# - WS variant 'B' (docs/layers.md): the variant the authors'
#   BCN+WS ImageNet checkpoints were trained with.
# - norm_eval=False (mmseg's DeepLabV3 already sets it; stated because BCN
#   needs it).
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py', '../ws_mm_imports.py']

conv_cfg = dict(type='ConvWS', variant='B')
norm_cfg = dict(type='BCN', num_groups=32, mode='estimate', momentum=0.1)
model = dict(
    backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, norm_eval=False),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
