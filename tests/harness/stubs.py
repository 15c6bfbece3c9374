"""Import stubs for torchvision / torchaudio / av, which ComfyUI imports at module level but our tests never use.

A stub is installed only when the real package cannot be found. Any attribute of a stub can be imported and
subclassed; calling it raises ImportError, so accidental use is loud.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Placeholder:
    def __init__(self, qualname: str):
        self._qualname = qualname

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(f"{self._qualname}.{item}")

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{self._qualname} is a test stub: the package is not installed")

    def __mro_entries__(self, bases):
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(f"{self.__name__}.{item}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]):
        self.roots = roots

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+stub"
        return module

    def exec_module(self, module):
        pass


def install(names: tuple[str, ...] = ("torchvision", "torchaudio", "av")) -> list[str]:
    """Stub every package of ``names`` that is not importable; returns the stubbed names."""
    missing = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is None]
    if missing:
        sys.meta_path.append(_StubFinder(set(missing)))
    return missing
