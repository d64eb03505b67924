"""Config checks and safe checkpoint loading (ws_mm.toolbox)."""
import collections

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

from ws_mm.toolbox.checkpoint import (UNSAFE_LOAD_ENV, WEIGHTS_ONLY_BY_DEFAULT,
                                      UnsafeCheckpointError,
                                      load_from_local_safely)

needs_weights_only = pytest.mark.skipif(
    not WEIGHTS_ONLY_BY_DEFAULT,
    reason='torch < 2.6 unpickles anything; ws_mm loads as the toolboxes do')
from ws_mm.toolbox.checks import (ConfigError, check_checkpoints,
                                  check_datasets, check_gpu_only_options,
                                  check_layer_types)


def model_cfg(**backbone):
    return Config(dict(
        default_scope='mmdet',
        model=dict(type='MaskRCNN',
                   backbone=dict(type='ResNet', depth=50, **backbone))))


def test_layer_type_typo_names_the_place_and_suggests():
    cfg = model_cfg(conv_cfg=dict(type='ConvWs'))
    with pytest.raises(ConfigError) as error:
        check_layer_types(cfg)
    message = str(error.value)
    assert 'model.backbone.conv_cfg' in message and "'ConvWs'" in message
    assert "did you mean 'ConvWS'" in message


def test_known_types_pass_in_every_scope():
    for scope in ('mmdet', 'mmseg', None):
        cfg = model_cfg(conv_cfg=dict(type='ConvWS'),
                        norm_cfg=dict(type='BCN', num_groups=32))
        cfg.default_scope = scope
        check_layer_types(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU path')
@pytest.mark.parametrize('norm_cfg', [
    dict(type='SyncBN', requires_grad=True),
    dict(type='BCN', num_groups=32, mode='batch', sync_bn=True)
])
def test_syncbn_on_cpu_is_refused_only_when_distributed(norm_cfg):
    # Not distributed, mmengine's Runner makes it BN: nothing to refuse.
    check_gpu_only_options(model_cfg(norm_cfg=norm_cfg))
    with pytest.raises(ConfigError, match="type='BN'.*several CPU processes"):
        check_gpu_only_options(model_cfg(norm_cfg=norm_cfg), distributed=True)
    cfg = model_cfg(norm_cfg=dict(type='BN'))
    cfg.sync_bn = 'torch'
    check_gpu_only_options(cfg)
    with pytest.raises(ConfigError, match="sync_bn='torch'.*remove it"):
        check_gpu_only_options(cfg, distributed=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU path')
def test_amp_on_cpu_is_refused():
    with pytest.raises(ConfigError, match='drop --amp'):
        check_gpu_only_options(model_cfg(), amp=True)
    check_gpu_only_options(model_cfg(norm_cfg=dict(type='GN', num_groups=32)))


def test_missing_dataset_folder_and_annotation(tmp_path):
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2,
        dataset=dict(type='CocoDataset', data_root=str(tmp_path / 'nope'),
                     ann_file='a.json')))))
    with pytest.raises(ConfigError, match=r'dataset\.data_root: dataset '
                       r"folder .*nope' not found.*make_demo_data"):
        check_datasets(cfg)
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path)
    with pytest.raises(ConfigError, match='annotation file .*a.json'):
        check_datasets(cfg)
    (tmp_path / 'a.json').write_text('{}')
    check_datasets(cfg)


def test_unreachable_pretrained_weights_stop_with_one_line(tmp_path,
                                                           refused_port):
    url = f'http://127.0.0.1:{refused_port}/resnet50_gn_ws.pth'
    cfg = model_cfg(init_cfg=dict(type='Pretrained', checkpoint=url))
    with pytest.raises(ConfigError) as error:
        check_checkpoints(cfg)
    message = str(error.value)
    assert '\n' not in message
    assert 'model.backbone.init_cfg.checkpoint: cannot fetch' in message
    assert 'set model.backbone.init_cfg=None to train from scratch' in message

    cfg = model_cfg(init_cfg=dict(type='Pretrained',
                                  checkpoint=str(tmp_path / 'x.pth')))
    with pytest.raises(ConfigError, match="x.pth' not found; point it at"):
        check_checkpoints(cfg)


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """A checkpoint as mmengine's Runner writes it (message hub included)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x, mode='loss'):
            return dict(loss=self.linear(x).pow(2).mean())

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return dict(x=torch.full((2, ), float(i)))

    work_dir = tmp_path_factory.mktemp('runner')
    Runner(model=Model(), work_dir=str(work_dir),
           experiment_name=f'safe_loading_{work_dir.name}',
           train_dataloader=dict(dataset=Data(), batch_size=2,
                                 sampler=dict(type='DefaultSampler'),
                                 collate_fn=dict(type='default_collate')),
           train_cfg=dict(by_epoch=False, max_iters=2),
           optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
           default_hooks=dict(checkpoint=dict(
               type='CheckpointHook', interval=2, by_epoch=False))).train()
    return work_dir / 'iter_2.pth'


def test_runner_checkpoints_load_through_mmengine(runner_checkpoint):
    checkpoint = _load_checkpoint(str(runner_checkpoint))
    assert checkpoint['meta']['iter'] == 2
    buffer = checkpoint['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() > 0  # a real HistoryBuffer, with its methods


def test_the_safe_loader_is_mmengine_s_where_torch_is_weights_only():
    ours = CheckpointLoader._schemes[''] is load_from_local_safely
    assert ours == WEIGHTS_ONLY_BY_DEFAULT


@needs_weights_only
def test_foreign_pickles_are_refused_unless_opted_in(tmp_path, monkeypatch):
    # (conftest.py unsets UNSAFE_LOAD_ENV before every test)
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'extra': collections.deque([1])}, path)
    with pytest.raises(UnsafeCheckpointError,
                       match=f'collections.deque.*{UNSAFE_LOAD_ENV}=1'):
        _load_checkpoint(str(path))
    cfg = Config(dict(load_from=str(path)))
    with pytest.raises(ConfigError, match='load_from: .*collections.deque'):
        check_checkpoints(cfg)
    monkeypatch.setenv(UNSAFE_LOAD_ENV, '1')
    assert _load_checkpoint(str(path))['extra'] == collections.deque([1])
    check_checkpoints(cfg)
