# The demo TSM (tsm_r18_gn-ws_2xb8-1x1x8-300it_demo-sth-64px.py) with
# BCN+WS: WS convs with variant B (the variant of the BCN authors' files)
# and BCN in ws_mm's 'estimate' mode, as the Table 12 BCN+WS row
# (configs/tsm/); everything else is the GN+WS demo's, so the two runs
# differ in the normalization only. mmaction's own
# TSMOptimWrapperConstructor raises for BCN in this mode; ws_mm.toolbox.action
# puts every BCN parameter in TSM's norm group.
_base_ = './tsm_r18_gn-ws_2xb8-1x1x8-300it_demo-sth-64px.py'

model = dict(
    backbone=dict(
        conv_cfg=dict(type='ConvWS', variant='B'),
        norm_cfg=dict(
            _delete_=True, type='BCN', num_groups=32, mode='estimate',
            momentum=0.1)))
