"""tools/: 2-process CPU training, resuming and testing through torchrun with
the real toolboxes, and the errors a user sees for bad input."""
import collections
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from devkit import cfg_options, demo_data_options  # conftest.py loads it

from ws_mm.toolbox.checkpoint import WEIGHTS_ONLY_BY_DEFAULT
from ws_mm import destroy_process_group
from references import rounding_tol

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DET_DEMO = ROOT / 'configs/demo/mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-coco.py'
SEG_DEMO = ROOT / 'configs/demo/deeplabv3_r18-d16_gn-ws-all_1xb2-500it_demo-voc-256x256.py'

# The demo configs switched from GN to BCN (estimate mode), on small data.
DET_BCN = """
_base_ = ['{demo}']
data_root = '{data}/coco/'
norm_cfg = dict(type='BCN', num_groups=32, mode='estimate')
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg),
                  mask_head=dict(norm_cfg=norm_cfg)))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
"""
SEG_BCN = """
_base_ = ['{demo}']
data_root = '{data}/VOCdevkit/VOC2012'
norm_cfg = dict(type='BCN', num_groups=32, mode='estimate')
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
"""
SHORT_RUN = [
    'train_cfg.max_iters=3', 'train_cfg.val_interval=100',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
    'randomness.seed=0'
]


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture
def dist_run(run_tool, free_port):
    """Run tools/dist_*.sh; each run gets its own port: the previous
    run's may still be held, which would abort the next process group."""
    return lambda args: run_tool(args, env={'PORT': str(free_port())})


def bcn_config(tmp_path, template, demo, data):
    path = tmp_path / f'{demo.stem}_bcn.py'
    path.write_text(template.format(demo=demo, data=data))
    return path


def bcn_buffers(checkpoint):
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    return {k: v for k, v in state.items() if '.pbn.' in k and 'running' in k
            or k.endswith('num_batches_tracked')}


def metrics_of(work_dir, key):
    """The metrics a test run of the toolbox logged, from rank 0's log.

    Not from <timestamp>.json: mmengine's LoggerHook.after_test_epoch writes
    that file from every rank at once (mode 'w', records of different
    lengths), so a 2-process test can leave it corrupt.
    """
    (log, ) = Path(work_dir).glob('*/*.log')
    lines = [line for line in log.read_text().splitlines()
             if 'Iter(test)' in line and f'{key}: ' in line]
    assert lines, f'no {key} in {log}'
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?\d+\.\d+)',
                                               lines[-1])}


@pytest.mark.dist
@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_two_process_train_resume_and_test(tmp_path, demo_data, dist_run,
                                           toolbox):
    template, demo = (DET_BCN, DET_DEMO) if toolbox == 'mmdet' else (
        SEG_BCN, SEG_DEMO)
    config = bcn_config(tmp_path, template, demo, demo_data.root)
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'

    # Three iterations on 2 processes, a checkpoint after each.
    proc = check(dist_run(['bash', 'tools/dist_train.sh', str(config), '2',
                           '--work-dir', str(straight), '--cfg-options',
                           *SHORT_RUN]))
    assert 'ws_mm: weight-standardized convs' in proc.stdout + proc.stderr
    for i in (1, 2, 3):
        assert (straight / f'iter_{i}.pth').is_file()

    # Resume from iteration 2 in another work dir and train the third.
    if toolbox == 'mmdet':  # --resume PATH
        resume = ['--resume', str(straight / 'iter_2.pth')]
    else:  # mmseg: --resume is a flag, the checkpoint comes from work_dir
        resumed.mkdir()
        shutil.copy(straight / 'iter_2.pth', resumed / 'iter_2.pth')
        (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_2.pth'))
        resume = ['--resume']
    check(dist_run(['bash', 'tools/dist_train.sh', str(config), '2',
                    '--work-dir', str(resumed), *resume, '--cfg-options',
                    *SHORT_RUN]))
    assert not (resumed / 'iter_1.pth').exists()  # it did not start over
    after = torch.load(resumed / 'iter_3.pth', weights_only=False)
    assert after['meta']['iter'] == 3
    # The estimates were restored, then moved by one more batch: the batch
    # count is 3 (not 1), and in the backbone, which sees the same images in
    # both runs, they agree with the uninterrupted run. (Heads see sampled
    # RoIs, and the sampler's random state is not part of a checkpoint.)
    ours, reference = bcn_buffers(resumed / 'iter_3.pth'), bcn_buffers(
        straight / 'iter_3.pth')
    counts = [v for k, v in ours.items() if k.endswith('num_batches_tracked')]
    assert counts and all(int(c) == 3 for c in counts)
    backbone = [k for k in reference if k.startswith('backbone.')]
    assert backbone and ours.keys() == reference.keys()
    # Both runs do the same float32 operations on the same images (one
    # thread per process), and agree bit for bit here. Were a sum taken in
    # another order, the estimates would differ by its rounding: about
    # eps * sqrt(n) * their magnitude, for n values per channel (at most 2
    # processes x 2 images x 128 x 128 after the stem). Another batch, or
    # estimates not restored, moves them by a good part of the std.
    rounding = rounding_tol(torch.float32, 2 * 2 * 128**2)
    for key in backbone:
        if key.endswith('num_batches_tracked'):
            assert torch.equal(ours[key], reference[key]), key
        elif key.endswith('running_mean'):  # per channel
            var = key.replace('running_mean', 'running_var')
            moment = reference[var] + reference[key].square()
            for stat, size in ((key, moment.sqrt()), (var, moment)):
                error = (ours[stat] - reference[stat]).abs()
                assert (error <= rounding * size).all(), (stat, error.max())

    # Evaluate the resumed checkpoint on 2 processes.
    test_dir = tmp_path / 'test'
    check(dist_run(['bash', 'tools/dist_test.sh', str(config),
                    str(resumed / 'iter_3.pth'), '2', '--work-dir',
                    str(test_dir)]))
    if toolbox == 'mmdet':
        record = metrics_of(test_dir, 'coco/bbox_mAP')
        assert 0.0 <= record['coco/bbox_mAP'] <= 1.0
        assert 0.0 <= record['coco/segm_mAP'] <= 1.0
    else:
        record = metrics_of(test_dir, 'mIoU')
        assert 0.0 <= record['mIoU'] <= 100.0


@pytest.mark.dist
def test_two_nodes_train_resume_and_test(tmp_path, demo_data, run_tool,
                                         free_port):
    """Two launches of tools/dist_*.sh, node ranks 0 and 1, one process each,
    meeting at MASTER_ADDR:PORT on this machine, as on two hosts."""
    def on_two_nodes(*args):
        port = str(free_port())

        def node(rank):
            return run_tool(['bash', *args],
                            env={'NNODES': '2', 'NODE_RANK': str(rank),
                                 'MASTER_ADDR': '127.0.0.1', 'PORT': port})

        with ThreadPoolExecutor(2) as pool:
            return [check(p) for p in pool.map(node, (0, 1))]

    data = ['--cfg-options',
            *cfg_options(demo_data_options('mmseg', demo_data.root))]
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    node0, _ = on_two_nodes('tools/dist_train.sh', str(SEG_DEMO), '1',
                            '--work-dir', str(straight), *data, *SHORT_RUN)
    # mmengine logs the world size as 'GPU number'.
    assert 'GPU number: 2' in node0.stdout + node0.stderr
    assert (straight / 'iter_3.pth').is_file()

    # mmseg's --resume takes the newest checkpoint of the work dir.
    resumed.mkdir()
    shutil.copy(straight / 'iter_2.pth', resumed / 'iter_2.pth')
    (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_2.pth'))
    node0, _ = on_two_nodes('tools/dist_train.sh', str(SEG_DEMO), '1',
                            '--work-dir', str(resumed), '--resume', *data,
                            *SHORT_RUN)
    assert 'resumed epoch: 0, iter: 2' in node0.stdout + node0.stderr
    assert (resumed / 'iter_3.pth').is_file()
    assert not (resumed / 'iter_1.pth').exists()

    tested = tmp_path / 'tested'
    on_two_nodes('tools/dist_test.sh', str(SEG_DEMO),
                 str(resumed / 'iter_3.pth'), '1', '--work-dir', str(tested),
                 *data)
    assert 0 <= metrics_of(tested, 'mIoU')['mIoU'] <= 100


@pytest.fixture(scope='module')
def slurm_cluster(tmp_path_factory):
    """Slurm's controller and node daemon on this machine for the tests of
    this module (tests/slurm_cluster.sh), stopped afterwards."""
    folder = tmp_path_factory.mktemp('slurm')
    script = str(ROOT / 'tests/slurm_cluster.sh')
    start = subprocess.run(['bash', script, 'start', str(folder)],
                           capture_output=True, text=True, timeout=600)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield {'SLURM_CONF': str(folder / 'slurm.conf')}
    finally:
        subprocess.run(['bash', script, 'stop', str(folder)], timeout=60)


@pytest.mark.dist
def test_slurm_train_and_test(tmp_path, demo_data, run_tool, free_port,
                              slurm_cluster):
    """tools/slurm_train.sh and slurm_test.sh through a real srun: 2 tasks
    on a CPU-only node (GPUS_PER_NODE=0), gloo, rank 0 on the first node."""
    env = dict(slurm_cluster, GPUS='2', GPUS_PER_NODE='0', CPUS_PER_TASK='1')
    data = ['--cfg-options',
            *cfg_options(demo_data_options('mmseg', demo_data.root))]
    work_dir = tmp_path / 'train'
    proc = check(run_tool(
        ['bash', 'tools/slurm_train.sh', 'debug', 'ws_mm_train', str(SEG_DEMO),
         str(work_dir), *data, *SHORT_RUN],
        env=dict(env, MASTER_PORT=str(free_port()))))
    assert 'GPU number: 2' in proc.stdout + proc.stderr
    assert (work_dir / 'iter_3.pth').is_file()

    test_dir = tmp_path / 'test'
    check(run_tool(
        ['bash', 'tools/slurm_test.sh', 'debug', 'ws_mm_test', str(SEG_DEMO),
         str(work_dir / 'iter_3.pth'), '--work-dir', str(test_dir), *data],
        env=dict(env, MASTER_PORT=str(free_port()))))
    assert 0 <= metrics_of(test_dir, 'mIoU')['mIoU'] <= 100


def test_syncbn_trains_in_one_process_on_cpu(tmp_path, demo_data, run_tool):
    """As in the toolboxes: a run that is not distributed turns SyncBN, and
    the per-channel stage of BCN(sync_bn=True), into BN (mmengine's Runner
    does), so a GPU config runs on a CPU machine."""
    config = tmp_path / 'syncbn.py'
    config.write_text(SEG_BCN.format(demo=SEG_DEMO, data=demo_data.root) + """
norm_cfg = dict(type='BCN', num_groups=32, mode='batch', sync_bn=True)
model.update(backbone=dict(norm_cfg=dict(_delete_=True, type='SyncBN',
                                          requires_grad=True)),
             decode_head=dict(norm_cfg=norm_cfg),
             auxiliary_head=dict(norm_cfg=norm_cfg))
""")
    work_dir = tmp_path / 'work'
    proc = check(run_tool([sys.executable, 'tools/train.py', str(config),
                           '--work-dir', str(work_dir), '--cfg-options',
                           'train_cfg.max_iters=1',
                           'train_cfg.val_interval=100']))
    assert 'will be automatically reverted to BatchNormXd' in proc.stdout
    state = torch.load(work_dir / 'iter_1.pth', weights_only=False)
    counts = {k: int(v) for k, v in state['state_dict'].items()
              if k.endswith('num_batches_tracked')}
    # The statistics were kept, by BN in the place of SyncBN.
    assert counts['backbone.stem.1.num_batches_tracked'] == 1, counts
    assert counts['decode_head.bottleneck.bcn.pbn.num_batches_tracked'] == 1


def test_the_toolbox_own_train_py_runs_our_config(tmp_path, demo_data,
                                                 run_tool):
    """custom_imports in the config is enough for mmdet's own tools."""
    import mmdet
    script = Path(mmdet.__file__).parent / '.mim/tools/train.py'
    config = bcn_config(tmp_path, DET_BCN, DET_DEMO, demo_data.root)
    work_dir = tmp_path / 'work'
    proc = check(run_tool([sys.executable, str(script), str(config),
                           '--work-dir', str(work_dir), '--cfg-options',
                           'train_cfg.max_iters=1',
                           'train_cfg.val_interval=100',
                           'default_hooks.checkpoint.interval=1']))
    assert 'ws_mm: weight-standardized convs' in proc.stdout + proc.stderr
    assert (work_dir / 'iter_1.pth').is_file()


@pytest.mark.parametrize('case', [
    'typo', 'missing_data', 'unreachable_pretrained', 'distributed_syncbn',
    'amp', 'foreign_checkpoint', 'truncated_test', 'truncated_resume'
])
def test_bad_input_stops_early_with_one_line(tmp_path, demo_data, run_tool,
                                             refused_port, case):
    config = bcn_config(tmp_path, DET_BCN, DET_DEMO, demo_data.root)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'keep.txt').write_text('earlier results')
    tool, positional, options = 'tools/train.py', [], []
    if case == 'typo':
        options = ['--cfg-options', 'model.neck.conv_cfg.type=ConvWs']
        expected = "did you mean 'ConvWS'"
    elif case == 'missing_data':
        options = ['--cfg-options',
                   f'train_dataloader.dataset.data_root={tmp_path}/none/']
        expected = 'dataset folder'
    elif case == 'unreachable_pretrained':
        with config.open('a') as f:  # the demo has init_cfg=None to replace
            f.write('model.update(backbone=dict(norm_cfg=norm_cfg, init_cfg='
                    f"dict(_delete_=True, type='Pretrained', "
                    f"checkpoint='http://127.0.0.1:{refused_port}/"
                    "resnet18_gn_ws.pth')))\n")
        expected = 'to train from scratch'
    elif case == 'distributed_syncbn':
        if torch.cuda.is_available():
            pytest.skip('checks the CPU path')
        # The check runs before the process group starts.
        options = ['--launcher', 'pytorch', '--cfg-options',
                   'model.backbone.norm_cfg.type=SyncBN']
        expected = 'several CPU processes'
    elif case == 'amp':
        if torch.cuda.is_available():
            pytest.skip('checks the CPU path')
        options = ['--amp']
        expected = 'drop --amp'
    elif case.startswith('truncated'):  # an interrupted download or save
        cut = tmp_path / 'cut.pth'
        torch.save({'state_dict': {'w': torch.ones(4096)}}, cut)
        cut.write_bytes(cut.read_bytes()[:8192])
        if case == 'truncated_test':
            tool, positional = 'tools/test.py', [str(cut)]
            expected = f"error: CHECKPOINT: checkpoint '{cut}' is incomplete"
        else:
            options = ['--resume', str(cut)]
            expected = f"error: --resume: checkpoint '{cut}' is incomplete"
    else:
        if not WEIGHTS_ONLY_BY_DEFAULT:
            pytest.skip('torch < 2.6 unpickles anything, as the toolboxes do')
        foreign = tmp_path / 'foreign.pth'
        torch.save({'state_dict': {}, 'extra': collections.deque()}, foreign)
        tool, positional = 'tools/test.py', [str(foreign)]
        expected = 'WS_MM_UNSAFE_LOAD=1'
    proc = run_tool([sys.executable, tool, str(config), *positional,
                     '--work-dir', str(work_dir), *options])
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith('error: ') and expected in error, proc.stderr
    assert sorted(p.name for p in work_dir.iterdir()) == ['keep.txt']
    assert (work_dir / 'keep.txt').read_text() == 'earlier results'


def test_no_gloo_thread_outlives_the_toolbox_script(tmp_path, run_tool):
    """The runner keeps the group alive through its DDP wrapper in reference
    cycles: left to the interpreter's exit, gloo's threads could abort a
    finished run (SIGABRT). After run_script they are joined."""
    count = ("sum('gloo' in open(f'/proc/self/task/{t}/comm').read()\n"
             "    for t in os.listdir('/proc/self/task'))")
    script = tmp_path / 'toolbox_script.py'
    script.write_text(
        'import os\n'
        'import torch\n'
        'from torch import nn\n'
        'class Runner:\n'
        '    pass\n'
        'runner = Runner()\n'
        'runner.model = nn.parallel.DistributedDataParallel(nn.Linear(2, 2))\n'
        'runner.cycle = runner  # as the toolboxes\' runners have\n'
        'runner.model(torch.ones(1, 2)).sum().backward()\n'
        f"print('gloo threads in the script:', {count})\n")
    code = (
        'import os\n'
        'import torch.distributed as dist\n'
        'from ws_mm.toolbox.launch import run_script\n'
        "dist.init_process_group('gloo', rank=0, world_size=1, "
        "init_method='tcp://127.0.0.1:0')\n"  # port 0: the store picks one
        f'run_script({str(script)!r})\n'
        "print('initialized:', dist.is_initialized())\n"
        f"print('gloo threads after:', {count})\n")
    out = check(run_tool([sys.executable, '-c', code])).stdout
    assert 'initialized: False' in out
    # what the check below would see if they were left running
    assert int(out.split('gloo threads in the script: ')[1].split()[0]) > 0
    assert 'gloo threads after: 0' in out


@pytest.mark.dist
def test_ending_a_process_group_never_deadlocks(tmp_path, run_tool,
                                                torchrun):
    """Where torch's own destroy_process_group can deadlock (on torch 2.0.1
    it did within these 300 cycles in every run tried), ws_mm's ends every
    group."""
    script = ROOT / 'tests' / 'dist_scripts' / 'destroy_cycles.py'
    proc = check(run_tool(torchrun(2, script, tmp_path, 300), timeout=300))
    for rank in range(2):
        assert (tmp_path / f'rank{rank}.txt').read_text() == '300', \
            proc.stderr[-3000:]


def test_ending_no_process_group_says_so():
    with pytest.raises(RuntimeError, match='not initialized'):
        destroy_process_group()


@pytest.mark.dist
def test_a_failing_two_process_run_exits_non_zero_with_its_error(
        tmp_path, demo_data, dist_run):
    config = bcn_config(tmp_path, DET_BCN, DET_DEMO, demo_data.root)
    proc = dist_run(['bash', 'tools/dist_train.sh', str(config), '2',
                     '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                     *SHORT_RUN, 'model.backbone.depth=19'])
    assert proc.returncode != 0
    assert 'invalid depth 19' in proc.stdout + proc.stderr


@pytest.mark.parametrize('args', [['nothere.py'], ['nothere.py', '--help']])
def test_a_missing_config_is_one_line(run_tool, args):
    proc = run_tool([sys.executable, 'tools/train.py', *args])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: config file 'nothere.py' not found")
