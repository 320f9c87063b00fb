"""Turn a misspelled config key into an error that names the key and the valid ones."""
import difflib
import inspect
import re
from contextlib import contextmanager

# mmengine's registry re-raises as "class `Name` in path.py: Name.__init__() got an unexpected keyword ..."
UNEXPECTED_KEY = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


class ConfigKeyError(TypeError):
    """A config dict has a key its ``type`` does not accept."""


def _find_registered_class(name: str):
    from mmseg import registry
    for attr in ('MODELS', 'DATASETS', 'TRANSFORMS', 'HOOKS', 'DATA_SAMPLERS', 'OPTIM_WRAPPERS',
                 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'METRICS', 'LOOPS', 'VISUALIZERS'):
        cls = getattr(registry, attr).get(name)
        if cls is not None:
            return cls
    return None


def explain_unknown_key(error: TypeError):
    """A ``ConfigKeyError`` for an "unexpected keyword argument" error, else None."""
    match = UNEXPECTED_KEY.search(str(error))
    if match is None:
        return None
    class_name, key = match.groups()
    cls = _find_registered_class(class_name)
    message = f"Unknown key '{key}' in the config dict of type '{class_name}'"
    if cls is not None:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'args', 'kwargs')]
        close = difflib.get_close_matches(key, valid, n=1)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        message += f'. Valid keys: {", ".join(valid)}'
    return ConfigKeyError(message + '.')


@contextmanager
def clear_config_errors():
    try:
        yield
    except TypeError as error:
        clearer = explain_unknown_key(error)
        if clearer is None:
            raise
        raise clearer from error
