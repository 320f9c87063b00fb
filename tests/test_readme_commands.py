"""The shell commands in the README cannot drift from the code.

Every command in a ```bash/```shell/```sh block of ``README.md`` and of the
user docs in ``docs/`` is parsed, and checked by kind:

* ``python tools/X.py ...`` (and ``benchmarks/``): the script exists, its
  ``--help`` runs, and every ``--option`` the command uses is in that help;
* ``bash benchmarks/X.sh``: the script exists and passes ``bash -n``;
* ``tools/*.sh`` launchers: the script exists, passes ``bash -n``, and the
  options after its own positional arguments are options of the Python
  tool it launches (``train.py``/``test.py``);
* ``mim train|test tinymim|mmseg CONFIG``: the same for ``tools/train.py``/
  ``tools/test.py`` (plus mim's own options);
* ``make TARGET``: the Makefile has the target;
* every config path (``mmseg_configs/...py``) builds with ``Config.fromfile``.

Placeholders in capitals (``CONFIG``, ``CKPT``) and ``[optional]``
brackets are allowed; paths of user data and checkpoints are not checked.
``--help`` runs in this process (``runpy``), so the heavy imports happen once.
"""
import contextlib
import glob
import io
import os.path as osp
import re
import runpy
import shlex
import subprocess
import sys
from typing import Dict, List, NamedTuple

import pytest

from tests.helpers import ROOT

DOCS = ('README.md', *sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md'))))
SHELL_FENCES = ('bash', 'shell', 'sh', 'console')
PYTHONS = {'python', 'python3', '.venv/bin/python', '$(VENV)/bin/python', '$PY'}
# mim's own options for `mim train|test` (passed to mim, not to the tool).
MIM_OPTIONS = {'--checkpoint', '--gpus', '--gpus-per-node', '--cpus-per-task', '--partition', '--srun-args',
               '--launcher', '--port', '-y', '--yes'}
# Launchers: the Python tool they run and how many positional arguments they take first.
LAUNCHERS = {
    'tools/dist_train.sh': ('train', 2),  # CONFIG GPUS
    'tools/dist_test.sh': ('test', 3),  # CONFIG CHECKPOINT GPUS
    'tools/slurm_train.sh': ('train', 3),  # PARTITION JOB_NAME CONFIG
    'tools/slurm_test.sh': ('test', 4),  # PARTITION JOB_NAME CONFIG CHECKPOINT
}


class Command(NamedTuple):
    doc: str
    line: int
    text: str
    argv: List[str]

    def __str__(self):
        return f'{self.doc}:{self.line}: {self.text}'


def split_commands(doc: str, text: str) -> List[Command]:
    """Commands of the shell code blocks of a markdown text.

    Continuation lines are joined, comments dropped, and ``&&``/``;``/``|``
    chains split; leading ``VAR=value`` assignments are removed.
    """
    commands = []
    fence = None
    pending, start = '', 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith('```'):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending:
            start = number
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        full, pending = pending + stripped, ''
        try:
            tokens = shlex.split(full, comments=True)
        except ValueError as err:
            raise ValueError(f'{doc}:{start}: cannot parse {full!r}: {err}') from err
        for part in _split_chain(tokens):
            while part and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', part[0]):
                part = part[1:]
            if part:
                commands.append(Command(doc, start, full, part))
    return commands


def _split_chain(tokens: List[str]) -> List[List[str]]:
    parts, current = [], []
    for token in tokens:
        if token in ('&&', '||', ';', '|'):
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return parts


def clean(token: str) -> str:
    """``[--work-dir`` -> ``--work-dir``; ``--cfg-options=a`` -> ``--cfg-options``."""
    token = token.strip('[]')
    return token.split('=', 1)[0] if token.startswith('--') else token


def options(argv: List[str]) -> List[str]:
    return [clean(a) for a in argv if re.match(r'^--?[A-Za-z]', clean(a))]


_HELP_CACHE: Dict[str, str] = {}


def tool_help(script: str) -> str:
    """``--help`` text of a Python script of the repo, run in this process."""
    if script not in _HELP_CACHE:
        path = osp.join(ROOT, script)
        out = io.StringIO()
        argv = sys.argv
        sys.argv = [path, '--help']
        sys.path.insert(0, osp.dirname(path))  # as `python script.py` does (benchmarks import their common.py)
        try:
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
                runpy.run_path(path, run_name='__main__')
        finally:
            sys.argv = argv
            sys.path.remove(osp.dirname(path))
        assert exit_info.value.code in (0, None), f'{script} --help exited with {exit_info.value.code}'
        _HELP_CACHE[script] = out.getvalue()
    return _HELP_CACHE[script]


def check_options(used: List[str], script: str, command: Command, allowed=()) -> None:
    help_text = tool_help(script)
    accepted = set(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', help_text)) | set(allowed)
    unknown = [o for o in used if o not in accepted]
    assert not unknown, f'{command}\n  {script} has no option {unknown}'


_BUILT_CONFIGS = set()


def check_config_paths(command: Command) -> None:
    from mmengine.config import Config
    for token in command.argv:
        token = clean(token)
        if token.endswith('.py') and token.split('/')[0] in ('mmseg_configs', 'configs'):
            path = osp.join(ROOT, token)
            assert osp.isfile(path), f'{command}\n  config {token} does not exist'
            if path not in _BUILT_CONFIGS:  # several commands share a config
                Config.fromfile(path)
                _BUILT_CONFIGS.add(path)


def check_command(command: Command) -> None:
    argv = command.argv
    program = argv[0]
    check_config_paths(command)
    if program in PYTHONS:
        if argv[1:2] == ['-m']:
            return  # python -m pytest / pip: not ours
        script = argv[1]
        if not script.startswith(('tools/', 'docs/', 'benchmarks/')):
            return
        assert osp.isfile(osp.join(ROOT, script)), f'{command}\n  {script} does not exist'
        check_options(options(argv[2:]), script, command)
    elif program in LAUNCHERS or program in ('bash', 'sh') and argv[1:2] and argv[1] in LAUNCHERS:
        if program in ('bash', 'sh'):
            argv = argv[1:]
        launcher = argv[0]
        tool, positional = LAUNCHERS[launcher]
        path = osp.join(ROOT, launcher)
        assert osp.isfile(path), f'{command}\n  {launcher} does not exist'
        subprocess.run(['bash', '-n', path], check=True)
        check_options(options(argv[1 + positional:]), f'tools/{tool}.py', command)
    elif program in ('bash', 'sh') and argv[1:2] and argv[1].startswith('benchmarks/'):
        path = osp.join(ROOT, argv[1])
        assert osp.isfile(path), f'{command}\n  {argv[1]} does not exist'
        subprocess.run(['bash', '-n', path], check=True)
    elif program == 'mim' and argv[1:2] and argv[1] in ('train', 'test'):
        assert argv[2] in ('tinymim', 'mmseg'), f'{command}\n  mim {argv[1]} needs the package tinymim or mmseg'
        check_options(options(argv[3:]), f'tools/{argv[1]}.py', command, MIM_OPTIONS)
    elif program == 'make':
        with open(osp.join(ROOT, 'Makefile')) as f:
            targets = set(re.findall(r'^([\w-]+):', f.read(), flags=re.M))
        missing = [t for t in argv[1:] if '=' not in t and t not in targets]
        assert not missing, f'{command}\n  the Makefile has no target {missing}'
    elif program.startswith('tools/') or program.startswith('docs/'):
        assert osp.isfile(osp.join(ROOT, program)), f'{command}\n  {program} does not exist'


def readme_commands() -> List[Command]:
    commands = []
    for doc in DOCS:
        path = osp.join(ROOT, doc)
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                commands += split_commands(doc, f.read())
    return commands


COMMANDS = readme_commands()


def test_readme_has_commands():
    assert any(c.doc == 'README.md' for c in COMMANDS), 'README.md has no shell code blocks'


@pytest.mark.parametrize('command', COMMANDS, ids=[f'{c.doc}:{c.line}' for c in COMMANDS])
def test_readme_command(command):
    check_command(command)


# ------------------------------------------------------- the checker itself
SAMPLE = """
```bash
# a comment line
CUDA_VISIBLE_DEVICES=0 python tools/train.py mmseg_configs/upernet/upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py \\
    --work-dir work_dirs/x --amp
make demo && make test
```
```python
not_a_command()
```
"""


def test_split_commands_joins_lines_and_chains():
    commands = split_commands('sample', SAMPLE)
    assert [c.argv[:2] for c in commands] == [['python', 'tools/train.py'], ['make', 'demo'], ['make', 'test']]
    assert commands[0].argv[-3:] == ['--work-dir', 'work_dirs/x', '--amp']
    assert commands[0].line == 4


@pytest.mark.parametrize('text, problem', [
    ('python tools/train.py CONFIG --no-such-flag', 'has no option'),
    ('python tools/not_there.py', 'does not exist'),
    ('python tools/train.py mmseg_configs/upernet/missing.py', 'does not exist'),
    ('make no-such-target', 'no target'),
    ('mim train tinymim CONFIG --work-dir W --bogus', 'has no option'),
    ('tools/dist_train.sh CONFIG 8 --bogus', 'has no option'),
])
def test_checker_catches_drift(text, problem):
    (command,) = split_commands('sample', f'```bash\n{text}\n```\n')
    with pytest.raises(AssertionError, match=problem):
        check_command(command)
