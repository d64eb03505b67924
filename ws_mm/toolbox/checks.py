"""Checks of a toolbox config before anything runs or is written.

The toolboxes find most config mistakes late: a typo in a layer type when the
model is built (with a message that does not name the type), a missing
dataset folder when the first batch is loaded, an unreachable pretrained
checkpoint after the work dir and logs exist, SyncBN in a distributed CPU run
deep inside the first forward. :func:`check_config` finds them first and raises
:class:`ConfigError` with one line saying what is wrong and what to do.
"""
import difflib
import os.path as osp
import sys
from typing import Iterator, NamedTuple, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DATASETS, MODELS, DefaultScope
from mmengine.runner import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

from .checkpoint import (IncompleteCheckpointError, UnsafeCheckpointError,
                         check_checkpoint_is_complete,
                         check_checkpoint_is_safe)
from .pretrained import fit
from .switch import config_dicts

# Layer types that only run on CUDA devices.
GPU_ONLY_NORMS = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm')
PRETRAINED = ('Pretrained', 'AuthorsPretrained')
REMOTE_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'openmmlab://',
                   'torchvision://', 'mmcls://', 'pavi://', 's3://')


class ConfigError(ValueError):
    """A config that cannot run as it is; the message says how to fix it."""


def _layer_cfgs(cfg: Config) -> Iterator[Tuple[str, dict]]:
    for path, node in config_dicts(cfg.get('model', {}), 'model'):
        for key in ('conv_cfg', 'norm_cfg'):
            layer = node.get(key)
            if isinstance(layer, dict) and 'type' in layer:
                yield f'{path}.{key}', layer


def check_layer_types(cfg: Config) -> None:
    """Every ``conv_cfg`` / ``norm_cfg`` type resolves in the config's scope."""
    # The lookup of mmcv's build_conv_layer / build_norm_layer.
    with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as reg:
        for path, layer in _layer_cfgs(cfg):
            name = layer['type']
            if not isinstance(name, str) or reg.get(name) is not None:
                continue
            known, parent = set(), reg
            while parent is not None:
                known |= set(parent.module_dict)
                parent = parent.parent
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = (f'did you mean {" or ".join(map(repr, close))}?'
                    if close else 'is ws_mm imported (custom_imports)?')
            raise ConfigError(
                f'{path}: unknown layer type {name!r}; {hint}')


def check_mmaction_fixes(cfg: Config) -> None:
    """An mmaction model with norms other than BN imports ws_mm's fixes of
    mmaction's ResNets and TSM's optimizer (:mod:`.action`)."""
    if (cfg.get('default_scope') != 'mmaction'
            or 'ws_mm.toolbox.action' in sys.modules):
        return
    with MODELS.switch_scope_and_registry('mmaction') as reg:
        for path, layer in _layer_cfgs(cfg):
            cls = reg.get(layer['type']) if path.endswith('norm_cfg') else None
            if isinstance(cls, type) and not issubclass(cls, _BatchNorm):
                raise ConfigError(
                    f"{path}: {layer['type']} in mmaction's ResNets and TSM's "
                    "optimizer needs ws_mm's fixes: add 'ws_mm.toolbox.action'"
                    ' to custom_imports')


def check_gpu_only_options(cfg: Config, amp: bool = False,
                           distributed: bool = False) -> None:
    """On a machine without CUDA, say before training what cannot run.

    SyncBN (and ``BCN(sync_bn=True)``) is refused only in a distributed run:
    without one, mmengine's Runner turns it into plain BN, as the toolboxes
    do on any machine. torch synchronizes batch statistics on CUDA only.
    """
    if torch.cuda.is_available():
        return
    if distributed:
        for path, layer in _layer_cfgs(cfg):
            if layer['type'] in GPU_ONLY_NORMS or layer.get('sync_bn'):
                raise ConfigError(
                    f'{path} = {dict(layer)} synchronizes batch statistics '
                    'across processes, which torch does on CUDA GPUs only, '
                    'and this machine has none: use '
                    "norm_cfg=dict(type='BN', requires_grad=True) (or "
                    'sync_bn=False) for per-process statistics, or a GN / '
                    "BCN mode='estimate' config, to run on several CPU "
                    'processes')
        if cfg.get('sync_bn'):
            raise ConfigError(
                f'sync_bn={cfg.sync_bn!r} converts BN to SyncBN, which torch '
                'runs on CUDA GPUs only; remove it to run on several CPU '
                'processes')
    wrapper = cfg.get('optim_wrapper', {}).get('type')
    if amp or wrapper == 'AmpOptimWrapper':
        raise ConfigError(
            'mixed precision (--amp / AmpOptimWrapper) needs a CUDA GPU in '
            'the toolboxes; drop --amp to train in float32 on CPU')


def _dataset_roots(cfg: Config, loaders) -> Iterator[Tuple[str, dict]]:
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for path, node in config_dicts(cfg[loader].get('dataset', {}),
                                f'{loader}.dataset'):
            if 'data_root' in node or 'ann_file' in node:
                yield path, node


# The dataset base classes whose sample lists are checked: mmseg's and
# mmpretrain's. Other toolboxes' datasets are not built here (mmdet's would
# read their COCO json).
LISTED_DATASETS = (('mmseg.datasets.basesegdataset', 'BaseSegDataset'),
                   ('mmpretrain.datasets.base_dataset', 'BaseDataset'))


def _listed_dataset_class(node: dict,
                          scope: Optional[str]) -> Optional[type]:
    """The class of an mmseg or mmpretrain dataset node, else None."""
    name = node.get('type')
    if isinstance(name, str):
        with DATASETS.switch_scope_and_registry(scope) as registry:
            name = registry.get(name)  # imports the toolbox's datasets
    for module, base in LISTED_DATASETS:
        # loaded if the class derives from it: no toolbox is imported here
        base = getattr(sys.modules.get(module), base, None)
        if base and isinstance(name, type) and issubclass(name, base):
            return name
    return None


def check_samples(path: str, node: dict, scope: Optional[str]) -> None:
    """Every image (and label file) an mmseg or mmpretrain dataset lists
    exists.

    The dataset class computes the paths (its prefixes and suffixes) from
    its list, built lazily without transforms; nothing is loaded but the
    list, so 10k samples take a fraction of a second. A sample without its
    label file would stop training at the first epoch that draws it.
    """
    cls = _listed_dataset_class(node, scope)
    if cls is None or node.get('backend_args'):  # remote files: not stat'ed
        return
    kwargs = {k: v for k, v in node.items() if k not in ('type', '_scope_')}
    kwargs.update(pipeline=[], lazy_init=True)  # the list only
    try:
        with DefaultScope.overwrite_default_scope(scope):
            samples = cls(**kwargs).load_data_list()
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else ''
        raise ConfigError(
            f'{path}: {cls.__name__} cannot list its samples '
            f'({type(error).__name__}{": " if message else ""}{message}); '
            'check data_root, data_prefix and ann_file') from None
    # A run whose transforms load no labels (a test split without them) has
    # none to check.
    pipeline = node.get('pipeline')
    loads_labels = not pipeline or any(
        isinstance(t, dict) and 'LoadAnnotations' in str(t.get('type'))
        for t in pipeline)
    checked = [('img_path', 'image')] + (
        [('seg_map_path', 'label file')] if loads_labels else [])
    for key, what in checked:
        missing = [s[key] for s in samples
                   if s.get(key) and not osp.isfile(s[key])]
        if not missing:
            continue
        listed = f'listed in {node["ann_file"]!r}' if node.get(
            'ann_file') else 'found'
        hint = (
            'put the labels there, or list these samples in a dataset whose '
            'data_prefix.seg_map_path has them (labels in two folders make '
            "two datasets in a ConcatDataset, as mmseg's VOC + SBD: "
            'train.txt with SegmentationClass, aug.txt with '
            'SegmentationClassAug)'
            if key == 'seg_map_path' else
            'check data_root, data_prefix.img_path and the list')
        raise ConfigError(
            f'{path}: {what} {missing[0]!r} not found (samples {listed} '
            f'without one: {len(missing)} of {len(samples)}); {hint}')


def check_datasets(cfg: Config, loaders=('train_dataloader', )) -> None:
    """The data folders and annotation files of ``loaders`` exist, and the
    image and label files of mmseg and mmpretrain datasets."""
    for path, dataset in _dataset_roots(cfg, loaders):
        root = dataset.get('data_root') or ''
        if root and not osp.isdir(root):
            raise ConfigError(
                f'{path}.data_root: dataset folder {root!r} not found; put '
                'the dataset there (or a link to it), set data_root to where '
                'it is, or for the demo data run: python '
                'tools/make_demo_data.py')
        ann = dataset.get('ann_file')
        if ann:
            ann_path = osp.join(root, ann)
            if not osp.isfile(ann_path):
                raise ConfigError(
                    f'{path}.ann_file: annotation file {ann_path!r} not '
                    'found; check data_root and ann_file')
        check_samples(path, dataset, cfg.get('default_scope'))


class Checkpoint(NamedTuple):
    """A checkpoint a run loads: where it was named, the file or URL, and
    what to do if it is not there."""
    where: str
    source: str
    fix: str


def _checkpoints(cfg: Config, given: Optional[Checkpoint]):
    """The config's pretrained weights, and ``given`` (the checkpoint of
    tools/test.py or --resume) or else ``load_from``."""
    for path, node in config_dicts(cfg.get('model', {}), 'model'):
        if node.get('type') in PRETRAINED and node.get('checkpoint'):
            yield Checkpoint(f'{path}.checkpoint', node['checkpoint'],
                             f'set {path}=None to train from scratch')
        if isinstance(node.get('pretrained'), str):
            yield Checkpoint(f'{path}.pretrained', node['pretrained'],
                             f'set {path}.pretrained=None to train from '
                             'scratch')
    if given is not None:
        yield given
    elif cfg.get('load_from'):
        yield Checkpoint('load_from', cfg.load_from,
                         'set load_from=None to train from scratch')


def check_checkpoints(cfg: Config,
                      given: Optional[Checkpoint] = None) -> None:
    """Pretrained weights and the checkpoint to load can be read, before
    training or testing.

    Remote weights are fetched here (into the same cache the toolboxes read
    from), so a machine without network stops now with a one-line error,
    not after the work dir exists and the model is built.
    """
    for where, source, fix in _checkpoints(cfg, given):
        if not source.startswith(REMOTE_PREFIXES):
            if not osp.isfile(osp.expanduser(source)):
                raise ConfigError(f'{where}: checkpoint {source!r} not '
                                  f'found; point it at a local file, or '
                                  f'{fix}')
            try:
                check_checkpoint_is_complete(osp.expanduser(source))
                check_checkpoint_is_safe(osp.expanduser(source))
            except (IncompleteCheckpointError, UnsafeCheckpointError) as error:
                raise ConfigError(f'{where}: {error}') from None
            continue
        try:
            CheckpointLoader.load_checkpoint(source, map_location='cpu',
                                             logger='silent')
        except Exception as error:
            raise ConfigError(
                f'{where}: cannot fetch {source!r} ({type(error).__name__}: '
                f'{str(error).splitlines()[0] if str(error) else ""}); '
                'download it elsewhere and point the config at the local '
                f'file, or {fix}') from None


def check_pretrained_fits(cfg: Config) -> None:
    """Every model part that ``AuthorsPretrained`` initializes fits its file
    (norm, depth, WS variant, every key): the part is built and checked as
    its ``init_weights`` will check it, before the run writes anything."""
    for path, node in config_dicts(cfg.get('model', {}), 'model'):
        init = node.get('init_cfg')
        if not (isinstance(init, dict)
                and init.get('type') == 'AuthorsPretrained'):
            continue
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            part = MODELS.build(dict(node, init_cfg=None))
        try:
            fit(init['checkpoint'], part, allow_variant_change=init.get(
                'allow_variant_change', False), convs=init.get('convs'))
        except ValueError as error:
            raise ConfigError(f'{path}.init_cfg: {error}') from None


def check_config(cfg: Config, *, training: bool, amp: bool = False,
                 distributed: bool = False,
                 checkpoint: Optional[Checkpoint] = None) -> None:
    """All checks a train (``training=True``) or test run needs;
    ``checkpoint`` is what it loads instead of ``load_from``."""
    if not isinstance(cfg, (Config, ConfigDict)):
        raise TypeError(f'expected an mmengine Config, got {type(cfg)}')
    check_layer_types(cfg)
    check_mmaction_fixes(cfg)
    check_gpu_only_options(cfg, amp=amp, distributed=distributed)
    check_datasets(cfg, ('train_dataloader', 'val_dataloader')
                   if training else ('test_dataloader', ))
    check_checkpoints(cfg, checkpoint)
    if training:
        check_pretrained_fits(cfg)
