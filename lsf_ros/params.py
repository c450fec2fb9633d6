"""Node parameters declared from one table: type, range or choices, description, and whether they change at run time.

Each node keeps a ``{name: Param}`` table; :func:`declare` declares every entry with a full
``ParameterDescriptor`` (rclpy enforces ranges and read-only at declare time) and checks the choices,
which rclpy does not know about. ``read_only`` parameters need a restart (they shape the model or topics).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType


@dataclass(frozen=True)
class Param:
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True


def descriptor(name: str, p: Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, description=p.description, read_only=p.read_only)
    if isinstance(p.default, bool):
        d.type = ParameterType.PARAMETER_BOOL
    elif isinstance(p.default, float):
        d.type = ParameterType.PARAMETER_DOUBLE
        if p.range:
            d.floating_point_range = [FloatingPointRange(from_value=p.range[0], to_value=p.range[1], step=0.0)]
    elif isinstance(p.default, int):
        d.type = ParameterType.PARAMETER_INTEGER
        if p.range:
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    else:
        d.type = ParameterType.PARAMETER_STRING
        if p.choices:
            d.additional_constraints = "one of: " + ", ".join(p.choices)
    return d


def invalid_reason(name: str, p: Param, value: Any) -> str | None:
    """Why ``value`` is not valid for ``p`` (choices, and ranges for callers outside rclpy), or None."""
    if p.choices and value not in p.choices:
        return f"{name} must be one of {', '.join(p.choices)}; got {value!r}"
    if p.range and not (p.range[0] <= value <= p.range[1]):
        return f"{name} must be within {p.range[0]}..{p.range[1]}; got {value!r}"
    return None


def declare(node: Any, table: dict[str, Param]) -> dict[str, Any]:
    """Declare every parameter of ``table`` on ``node``; return their values. A value that is not valid is a
    ``ValueError`` naming the parameter."""
    for name, p in table.items():
        node.declare_parameter(name, p.default, descriptor(name, p))
    values = {name: node.get_parameter(name).value for name in table}
    for name, value in values.items():
        reason = invalid_reason(name, table[name], value)
        if reason:
            raise ValueError(f"parameter {reason}")
    return values
