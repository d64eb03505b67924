# The demo Mask R-CNN with its GN+WS ResNet-18 backbone initialized from the
# demo classifier (resnet18_gn-ws_2xb32-300it_demo-imagenet-64px.py), the
# path from mmpretrain into mmdet. make demo-pretrain trains the classifier
# and sets the checkpoint (--cfg-options
# model.backbone.init_cfg.checkpoint=PATH); everything else is the
# from-scratch demo's, so the two runs differ in the initialization only.
# AuthorsPretrained takes the classifier's checkpoint as it is (backbone.*),
# drops its head, and refuses a file whose norm, depth or WS variant does
# not fit this backbone.
_base_ = './mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-coco.py'

model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='AuthorsPretrained',
            checkpoint='work_dirs/demo_pretrain/cls/iter_300.pth')))
