"""Notebook parameters, checked in the cell that builds the config (right after ``parameters``).

papermill (``-p``) and the reproduce runner inject values as Python literals, so a slip such as
``-p seed 1.5`` or ``-p p_gold 5`` would otherwise fail deep inside a library call, or run and
give a meaningless number. ``check_parameters`` raises one ``ValueError`` that names every bad
parameter, its value and the values it accepts.
"""

from __future__ import annotations

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


def check_parameters(spec: dict[str, Param], **values) -> None:
    """Raise ``ValueError`` listing each ``name=value`` that ``spec[name]`` does not accept."""
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ValueError(f"parameters {unknown} are not among the known ones {sorted(spec)}")
    bad = [f"{name}={value!r} must be {spec[name].describe()}" for name, value in values.items()
           if not spec[name].accepts(value)]
    if bad:
        raise ValueError("bad notebook parameter" + ("s" if len(bad) > 1 else "") + ": " + "; ".join(bad))
