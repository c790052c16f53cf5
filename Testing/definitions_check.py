"""Load Python files' definitions under this interpreter: run it as the oldest supported Python (3.9).

Each file is compiled and its top-level statements run, as an import runs them, with every module outside the
standard library (third-party packages and the project's own modules) replaced by stand-ins. That evaluates what
Python evaluates when it loads a file: class bodies, decorators, default values, module-level aliases and, in files
without `from __future__ import annotations`, the annotations. Function bodies do not run, nor does a
`__main__.py` (it runs the program): it is only compiled. Standard library
imports are real, so a name the standard library of this version lacks fails as it would.

Usage: python -I definitions_check.py STDLIB_NAMES FILE... (STDLIB_NAMES: the standard library's top-level
module names, comma-separated). Prints one line per file that fails and exits with status 1 if one did.
"""
import builtins
import sys
import types


class StandIn(type):
    """A class standing for anything from a module that is not loaded: an attribute, call, subscript or arithmetic
    gives another stand-in; it iterates as empty. It has no `|`, so `X | None` fails on 3.9 as it does for real classes."""

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return StandIn(name, (), {})

    def __call__(cls, *args, **kwargs):
        return StandIn(cls.__name__, (), {})

    def __getitem__(cls, item):
        return cls

    def __iter__(cls):  # empty (else iterating would call __getitem__ without end)
        return iter(())


for _operator in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul"):
    setattr(StandIn, f"__{_operator}__", StandIn.__getitem__)
    setattr(StandIn, f"__r{_operator}__", StandIn.__getitem__)
StandIn.__neg__ = StandIn.__pos__ = lambda cls: cls


def stand_in_module(name: str) -> types.ModuleType:
    """A module whose every attribute (`from module import anything`) is a stand-in."""
    module = types.ModuleType(name)
    module.__getattr__ = lambda attribute: StandIn(attribute, (), {})
    return module


def importer(stdlib: set):
    """An __import__ that imports the standard library and gives a stand-in for anything else."""
    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in stdlib:
            return builtins.__import__(name, globals, locals, fromlist, level)
        return stand_in_module(name or "package")
    return guarded


def load(path: str, stdlib: set) -> None:
    with open(path, encoding="utf-8") as file:
        code = compile(file.read(), path, "exec", dont_inherit=True)
    if path.endswith("__main__.py"):
        return
    name = f"definitions_check_{len(sys.modules)}"
    module = types.ModuleType(name)
    module.__file__ = path
    module.__builtins__ = {**vars(builtins), "__import__": importer(stdlib)}
    sys.modules[name] = module  # dataclasses look the module up
    exec(code, module.__dict__)


def _line(error: Exception, path: str):
    """The line of `path` where `error` arose: the innermost frame of that file, or a syntax error's line."""
    line, trace = getattr(error, "lineno", None), error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == path:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def main(arguments: list) -> int:
    stdlib, paths = set(arguments[0].split(",")), arguments[1:]
    failed = 0
    for path in paths:
        try:
            load(path, stdlib)
        except Exception as error:  # noqa: BLE001 (every failure is reported)
            print(f"{path}:{_line(error, path)}: {type(error).__name__}: {error}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
