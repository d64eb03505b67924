"""The model zoo's metafiles (configs/<folder>/metafile.yml, OpenMMLab's
format): every config of a zoo folder is listed once, under its own name,
and every entry names an existing config, a declared collection, and no
result or weights that do not exist."""
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
# configs/demo is documented in the index
ZOO = ['mask_rcnn', 'deeplabv3', 'resnet', 'tsm']


def test_every_zoo_folder_has_a_metafile_and_a_readme():
    folders = {p.parent.name for p in CONFIGS.glob('*/*.py')
               if p.parent.name != '_base_'}
    assert folders == set(ZOO) | {'demo'}
    for folder in ZOO:
        assert (CONFIGS / folder / 'README.md').is_file()


@pytest.mark.parametrize('folder', ZOO)
def test_metafile_lists_exactly_the_folders_configs(folder):
    meta = yaml.safe_load((CONFIGS / folder / 'metafile.yml').read_text())
    collections = {c['Name'] for c in meta['Collections']}
    for c in meta['Collections']:
        assert c['README'] == f'configs/{folder}/README.md'
        assert c['Paper']['URL'] == 'https://arxiv.org/abs/1903.10520'
    listed = []
    for model in meta['Models']:
        assert set(model) >= {'Name', 'In Collection', 'Config', 'Metadata',
                              'Results', 'Weights'}, model['Name']
        assert model['In Collection'] in collections
        path = CONFIGS.parent / model['Config']
        assert path.is_file(), model['Config']
        assert path.parent.name == folder and path.stem == model['Name']
        # nothing trained here yet: no results, no weights
        assert model['Results'] == [] and model['Weights'] is None
        published = model['Metadata'].get('Published')
        if published:
            assert published['Source']
        listed.append(path.name)
    assert sorted(listed) == sorted(p.name for p in
                                    (CONFIGS / folder).glob('*.py'))


@pytest.mark.parametrize('folder', ZOO)
def test_readme_links_every_config(folder):
    text = (CONFIGS / folder / 'README.md').read_text()
    for path in (CONFIGS / folder).glob('*.py'):
        assert f']({path.name})' in text, path.name
