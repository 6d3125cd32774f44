"""Notebook parameters, checked in the cell that builds the config (right after ``parameters``).

papermill (``-p``) and the reproduce runner inject values as Python literals, so a slip such as
``-p seed 1.5`` or ``-p p_gold 5`` would otherwise fail deep inside a library call, or run and
give a meaningless number. ``check_parameters`` raises one ``ValueError`` that names every bad
parameter, its value and the values it accepts. A name the notebook does not have (``-p
learning_rate 1e-3`` where there is no such parameter) draws only a warning from papermill and
the run would go on without it: ``check_injected`` (called by ``presets.resolve_preset``, so by
every notebook's config cell) makes it an error.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from numbers import Integral, Real


@dataclass(frozen=True)
class Param:
    """What one notebook parameter accepts: a kind, optional bounds or choices, and ``None``."""

    kind: type  # int, float, bool or str; a float parameter also takes an int
    gt: float | None = None  # value > gt
    ge: float | None = None  # value >= ge
    lt: float | None = None  # value < lt
    choices: tuple | None = None  # the only values allowed (str parameters)
    optional: bool = False  # None allowed (it means "the preset's value")
    allow_inf: bool = False  # float('inf') allowed (beta = inf is SFT)

    def describe(self) -> str:
        """The accepted values in words, e.g. ``a float > 0 and < 1, or None``."""
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        elif self.kind is bool:
            text = "True or False"
        else:
            bounds = [f"{op} {b:g}" for op, b in ((">", self.gt), (">=", self.ge), ("<", self.lt)) if b is not None]
            text = f"{'an' if self.kind is int else 'a'} {self.kind.__name__}" + (f" {' and '.join(bounds)}"
                                                                               if bounds else "")
            if self.allow_inf:
                text += " (inf allowed)"
        return text + (", or None" if self.optional else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if not _is_kind(value, self.kind):
            return False
        if self.choices is not None:
            return value in self.choices
        if self.kind in (int, float):
            if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
                return False
            return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                    and (self.lt is None or value < self.lt))
        return True


def _is_kind(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never to a notebook parameter
        return False
    if kind is int:
        return isinstance(value, Integral)
    if kind is float:
        return isinstance(value, Real)
    return isinstance(value, kind)


FLAG = Param(bool)
SEED = Param(int, ge=0)


TEXT_FOR_NUMBER = " (papermill's -r passes text; -p passes a number, inf included)"


def _text_for_number(param: Param, value) -> bool:
    return isinstance(value, str) and param.kind in (int, float)


def check_parameters(spec: dict[str, Param], **values) -> None:
    """Raise ``ValueError`` listing each ``name=value`` that ``spec[name]`` does not accept."""
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ValueError(f"parameters {unknown} are not among the known ones {sorted(spec)}")
    bad = [f"{name}={value!r} must be {spec[name].describe()}" + (TEXT_FOR_NUMBER if _text_for_number(spec[name], value)
                                                                else "")
           for name, value in values.items() if not spec[name].accepts(value)]
    if bad:
        raise ValueError("bad parameter" + ("s" if len(bad) > 1 else "") + ": " + "; ".join(bad))


INJECTED = "# Parameters\n"  # how papermill's injected cell starts (papermill.translators)


def assigned_names(source: str) -> dict[str, str]:
    """``name -> source of its value`` for each plain assignment in a cell; ``{}`` if it does not parse."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return {}
    return {target.id: ast.get_source_segment(source, node.value) for node in body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def unknown_injected(history: list[str] | None = None) -> dict[str, str]:
    """Parameters papermill injected (``-p``/``-r``) that the notebook's parameters cell lacks.

    Read from the kernel's input history (IPython's ``In``, or ``history``): papermill's injected
    cell starts with ``# Parameters`` and runs right after the parameters cell. ``{}`` outside a
    kernel, or when nothing was injected.
    """
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return {}
        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    for i, source in enumerate(history):
        if i > 0 and source.startswith(INJECTED):
            known = assigned_names(history[i - 1])
            return {name: value for name, value in assigned_names(source).items() if name not in known}
    return {}


def check_injected(history: list[str] | None = None) -> None:
    """Raise ``ValueError`` naming each injected parameter the notebook does not have (``unknown_injected``)."""
    unknown = unknown_injected(history)
    if unknown:
        listed = ", ".join(f"{name}={value}" for name, value in unknown.items())
        raise ValueError(f"unknown notebook parameter{'s' if len(unknown) > 1 else ''} {listed}: not in this "
                         "notebook's parameters cell (papermill only warns; the run would ignore it)")
