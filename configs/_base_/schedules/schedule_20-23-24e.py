# The "20-23-24e" schedule of mmdet's gn+ws configs
# (gn+ws/mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco.py): mmdet's 2x schedule
# (24 epochs, SGD lr 0.02 for a total batch of 16, 500-iteration linear
# warm-up) with the LR divided by 10 after epochs 20 and 23 instead of 16
# and 22. Only `param_scheduler` differs from mmdet's schedule_2x.py.
_base_ = 'mmdet::_base_/schedules/schedule_2x.py'

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[20, 23],
        gamma=0.1)
]
