"""ws_mm: Weight Standardization and Batch-Channel Normalization for OpenMMLab.

In an environment that already has torch, mmengine and mmcv (with its ops)
``pip install -e .`` installs ws_mm alone: the ranges below are the ones that
work together and are satisfied by what is there, so nothing is rebuilt.
On a bare machine use ``make setup`` instead (see README).
"""
from setuptools import find_packages, setup

version = {}
with open('ws_mm/version.py') as f:
    exec(f.read(), version)

setup(
    name='ws_mm',
    version=version['__version__'],
    description='Weight Standardization and Batch-Channel Normalization '
    'layers and configs for mmdetection, mmsegmentation and mmpretrain',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['ws_mm', 'ws_mm.*']),
    # BCN's CPU kernels, built on first use (ws_mm/functional/bcn_kernels.py)
    package_data={'ws_mm.functional': ['bcn_kernels.cpp']},
    python_requires='>=3.10',  # tested on 3.11 (tools/setup_env.sh)
    install_requires=[
        # 2.0 and 2.1: what OpenMMLab's prebuilt mmcv 2.1.0 wheels cover
        # (CI tests 2.0); 2.13: the newest mmcv 2.1.0 builds against (2.14
        # needs C++20).
        'torch>=2.0,<2.14',
        'mmengine>=0.10.0,<1.0.0',
        # mmdet 3.3 and mmseg 1.2 assert mmcv < 2.2.0.
        'mmcv>=2.0.0,<2.2.0',
        # torch's extension loader builds BCN's CPU kernels with it
        'ninja',
    ],
    extras_require={
        'det': ['mmdet>=3.0.0,<3.4.0', 'pycocotools>=2.0.8'],
        'seg': ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
        # mmpretrain also needs the torchvision built for the installed torch,
        # which it does not declare; nor is it here: pip would take the newest
        # torchvision and replace torch with the one that matches it.
        'cls': ['mmpretrain>=1.2.0,<1.3.0'],
        # mmaction2 1.2.0 imports importlib_metadata without declaring it.
        'action': ['mmaction2>=1.2.0,<1.3.0', 'importlib_metadata'],
        'tests': ['pytest>=8', 'onnx'],
    },
    zip_safe=False,
)
