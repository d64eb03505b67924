"""Config checks and safe checkpoint loading (ws_mm.toolbox)."""
import collections
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

from ws_mm.toolbox.checkpoint import (UNSAFE_LOAD_ENV, WEIGHTS_ONLY_BY_DEFAULT,
                                      IncompleteCheckpointError,
                                      UnsafeCheckpointError,
                                      check_checkpoint_is_complete,
                                      load_from_local_safely)

needs_weights_only = pytest.mark.skipif(
    not WEIGHTS_ONLY_BY_DEFAULT,
    reason='torch < 2.6 unpickles anything; ws_mm loads as the toolboxes do')
from ws_mm.toolbox.checks import (ConfigError, check_checkpoints,
                                  check_datasets, check_gpu_only_options,
                                  check_layer_types)
from ws_mm.toolbox.launch import prepare


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


def voc_layout(root, names, labelled):
    """A VOC-style folder: an image per name, a label for those labelled."""
    from PIL import Image
    voc = root / 'VOC2012'
    for sub in ('JPEGImages', 'SegmentationClassAug', 'ImageSets'):
        (voc / sub).mkdir(parents=True)
    for name in names:
        Image.new('RGB', (4, 4)).save(voc / 'JPEGImages' / f'{name}.jpg')
    for name in labelled:
        Image.new('L', (4, 4)).save(voc / 'SegmentationClassAug' /
                                    f'{name}.png')
    (voc / 'ImageSets' / 'train.txt').write_text(
        ''.join(f'{n}\n' for n in names))
    return voc


def test_a_missing_label_file_is_named_with_the_fix(tmp_path):
    voc = voc_layout(tmp_path, ['a', 'b', 'c'], labelled=['a', 'c'])
    cfg = Config(dict(default_scope='mmseg', train_dataloader=dict(
        dataset=dict(type='ConcatDataset', datasets=[dict(
            type='PascalVOCDataset', data_root=str(voc),
            data_prefix=dict(img_path='JPEGImages',
                             seg_map_path='SegmentationClassAug'),
            ann_file='ImageSets/train.txt', pipeline=[])]))))
    with pytest.raises(ConfigError) as error:
        check_datasets(cfg)
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(
        'train_dataloader.dataset.datasets[0]: label file '
        f"'{voc}/SegmentationClassAug/b.png' not found (samples listed in "
        "'ImageSets/train.txt' without one: 1 of 3); put the labels there")
    assert 'ConcatDataset' in message and 'aug.txt' in message
    (voc / 'JPEGImages' / 'c.jpg').unlink()
    with pytest.raises(ConfigError, match=r"image '.*/JPEGImages/c\.jpg' "
                       'not found'):
        check_datasets(cfg)
    shutil.copy(voc / 'JPEGImages' / 'a.jpg', voc / 'JPEGImages' / 'c.jpg')
    shutil.copy(voc / 'SegmentationClassAug' / 'a.png',
                voc / 'SegmentationClassAug' / 'b.png')
    check_datasets(cfg)


def test_labels_are_checked_only_where_the_transforms_load_them(tmp_path):
    """A test split without labels (format-only) passes; with
    LoadAnnotations in its pipeline, its missing label is refused."""
    voc = voc_layout(tmp_path, ['a', 'b'], labelled=['a'])
    dataset = dict(type='PascalVOCDataset', data_root=str(voc),
                   data_prefix=dict(img_path='JPEGImages',
                                    seg_map_path='SegmentationClassAug'),
                   ann_file='ImageSets/train.txt',
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='PackSegInputs')])
    cfg = Config(dict(default_scope='mmseg',
                      test_dataloader=dict(dataset=dataset)))
    check_datasets(cfg, ('test_dataloader', ))
    cfg.test_dataloader.dataset.pipeline.insert(
        1, dict(type='LoadAnnotations'))
    with pytest.raises(ConfigError, match=r"label file '.*/b\.png' not"):
        check_datasets(cfg, ('test_dataloader', ))


def test_coco_annotations_are_not_loaded_by_the_check(tmp_path):
    """mmdet's datasets read their whole json when built: not here."""
    (tmp_path / 'a.json').write_text('not json: loading would fail')
    cfg = Config(dict(default_scope='mmdet', train_dataloader=dict(
        dataset=dict(type='CocoDataset', data_root=str(tmp_path),
                     ann_file='a.json', pipeline=[]))))
    check_datasets(cfg)


@pytest.fixture
def cut_checkpoint(runner_checkpoint, tmp_path):
    """A Runner checkpoint cut in half, as by an interrupted download."""
    data = runner_checkpoint.read_bytes()
    path = tmp_path / 'iter_2.pth'
    path.write_bytes(data[:len(data) // 2])
    return path


def test_a_truncated_checkpoint_is_named_by_the_loader(cut_checkpoint):
    # torch alone: "PytorchStreamReader failed reading zip archive"
    loaders = [load_from_local_safely]
    if WEIGHTS_ONLY_BY_DEFAULT:  # mmengine's loader for local files then
        loaders.append(_load_checkpoint)
    for load in loaders:
        with pytest.raises(IncompleteCheckpointError, match=(
                f"checkpoint '{cut_checkpoint}' is incomplete")):
            load(str(cut_checkpoint))
    empty = cut_checkpoint.with_name('empty.pth')
    empty.write_bytes(b'')
    with pytest.raises(IncompleteCheckpointError, match='0 bytes'):
        check_checkpoint_is_complete(str(empty))


LAST = '--resume (WORK_DIR/last_checkpoint)'


@pytest.mark.parametrize('argv,where', [
    (['test', 'CONFIG', 'CKPT'], 'CHECKPOINT'),
    (['train', 'CONFIG', '--resume', 'CKPT'], '--resume'),
    (['train', 'CONFIG', '--resume', '--work-dir', 'WORK_DIR'], LAST),
    (['train', 'CONFIG', '--resume'], LAST),  # the config's work_dir
], ids=['test', 'resume', 'auto_resume', 'auto_resume_cfg_work_dir'])
def test_tools_refuse_a_truncated_checkpoint_in_one_line(
        cut_checkpoint, tmp_path, argv, where):
    """tools/test.py CONFIG CKPT and tools/train.py --resume [CKPT] stop
    before anything is written (``run`` prints the line, exit 2)."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    # what mmengine's CheckpointHook writes next to each checkpoint
    (work_dir / 'last_checkpoint').write_text(str(cut_checkpoint))
    config = tmp_path / 'config.py'
    config.write_text(f"default_scope = 'mmseg'\nwork_dir = '{work_dir}'\n")
    before = sorted(tmp_path.rglob('*'))
    tool, *args = [{'CONFIG': str(config), 'CKPT': str(cut_checkpoint),
                    'WORK_DIR': str(work_dir)}.get(a, a) for a in argv]
    with pytest.raises(ConfigError) as error:
        prepare(tool, args)
    message = str(error.value)
    assert '\n' not in message
    where = where.replace('WORK_DIR', str(work_dir))
    assert message.startswith(
        f"{where}: checkpoint '{cut_checkpoint}' is incomplete")
    assert sorted(tmp_path.rglob('*')) == before


def test_complete_and_legacy_checkpoints_pass(runner_checkpoint, tmp_path):
    """torch < 1.6 wrote pickles, not zips: valid, and not refused."""
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, legacy,
               _use_new_zipfile_serialization=False)
    for path in (runner_checkpoint, legacy):
        check_checkpoint_is_complete(str(path))
        check_checkpoints(Config(dict(load_from=str(path))))
    assert _load_checkpoint(str(legacy))['state_dict']['w'].sum() == 2
