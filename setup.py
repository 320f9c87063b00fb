"""tinymim: TinyMIM relation distillation and ViT semantic segmentation on OpenMMLab 2.0."""
import glob
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(ROOT, 'tinymim', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    with open(osp.join(ROOT, 'requirements', name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def add_mim_extension():
    """Expose configs and tools as ``tinymim/.mim/{configs,tools}`` for ``mim``.

    OpenMMLab convention: links for development installs (so edits show up
    at once), copies for sdists and wheels. PEP 660 editable installs run
    ``editable_wheel``/``dist_info``, not ``develop``, so those count as
    development installs too.
    """
    argv = set(sys.argv)
    if argv & {'develop', 'editable_wheel', 'dist_info', 'egg_info'}:
        mode = 'symlink'
    elif argv & {'sdist', 'bdist_wheel', 'build', 'build_py'}:
        mode = 'copy'
    else:
        return
    mim_root = osp.join(ROOT, 'tinymim', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for src_name, tar_name in (('mmseg_configs', 'configs'), ('tools', 'tools')):
        src = osp.join(ROOT, src_name)
        tar = osp.join(mim_root, tar_name)
        if not osp.exists(src):
            continue
        if osp.islink(tar) or osp.isfile(tar):
            os.remove(tar)
        elif osp.isdir(tar):
            shutil.rmtree(tar)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_root), tar)
        else:
            shutil.copytree(src, tar)
    # mim resolves the index's and the metafiles' paths inside .mim, where the
    # configs are `configs/`. Linked metafiles stay as they are: rewriting them
    # would write into the source tree.
    copied_metafiles = glob.glob(osp.join(mim_root, 'configs', '*', 'metafile.yml')) if mode == 'copy' else []
    for path in [osp.join(ROOT, 'model-index.yml')] + copied_metafiles:
        with open(path) as f:
            text = f.read().replace('mmseg_configs/', 'configs/')
        tar = path if path in copied_metafiles else osp.join(mim_root, 'model-index.yml')
        if osp.islink(tar):  # never write through a link into the source tree
            os.remove(tar)
        with open(tar, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='tinymim',
        version=read_version(),
        description='TinyMIM relation distillation and small-ViT semantic segmentation '
                    'on mmengine/mmsegmentation',
        long_description=open(osp.join(ROOT, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        python_requires='>=3.9',
        packages=find_packages(include=['tinymim', 'tinymim.*']),
        include_package_data=True,
        package_data={'tinymim': ['.mim/configs/**/*.py', '.mim/configs/**/*.yml', '.mim/tools/**/*',
                                  '.mim/model-index.yml']},
        install_requires=['torch>=2.1', 'torchvision'] + read_requirements('runtime.txt')
        + ['mmcv>=2.0.0,<2.2.0'],
        extras_require={'tests': read_requirements('tests.txt'), 'deploy': read_requirements('deploy.txt')},
        zip_safe=False,
    )
