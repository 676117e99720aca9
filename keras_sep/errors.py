"""Errors that the CLI reports as one line (what is wrong and what to do), never a traceback."""


class KerasSepError(Exception):
    """Base class of the errors a user can fix."""


class ConfigError(KerasSepError, ValueError):
    """An unknown architecture, preset or field, or a value out of range."""


class ModelFolderError(KerasSepError):
    """A path that is not a keras-sep model folder."""


class AudioError(KerasSepError):
    """Audio that cannot be read or used: missing, not audio, empty, too short, NaN..."""


class DataError(KerasSepError):
    """A dataset root that is missing, empty or does not match the model."""


class MissingDependencyError(KerasSepError, ImportError):
    """A feature that needs a package which is not installed (e.g. TensorFlow)."""


def require(module: str, feature: str):
    """Import ``module`` for ``feature``, or raise a one-line error saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs the '{module}' package, which is not importable here ({e}); "
            f"install it (pip install keras-sep pulls it in) or use a feature that does not need it"
        ) from None


class ExportError(KerasSepError):
    """An export that cannot be done: bad options, a converter that refuses, a parity failure."""


class AudioWarning(UserWarning):
    """Audio that can be used, but not all of it as the user may expect (a truncated file)."""
