"""The one vocabulary of config messages: `<key>=<value>: <what is wrong>; <what to do>`.

Only the standard library and trainlab.errors are imported here, so every module (config checks that run
before torch is imported, components, callbacks) can use it.
"""

from __future__ import annotations

from typing import Any, Callable

from trainlab.errors import ConfigError


def shown(value: Any) -> str:
    """A value as the user would type it back: strings quoted, true/false/null as in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def bad(key: str, value: Any, problem: str, advice: str = "") -> ConfigError:
    """ConfigError('<key>=<value>: <problem>[; <advice>]')."""
    return ConfigError(f"{key}={shown(value)}: {problem}" + (f"; {advice}" if advice else ""))


class KeyProblem(ValueError):
    """A component's own check of one of its keys, before it knows where in the config it sits:
    the builder turns it into bad(f"{prefix}.{key}", ...)."""

    def __init__(self, key: str, value: Any, problem: str, advice: str = ""):
        super().__init__(f"{key}={shown(value)}: {problem}")
        self.key, self.value, self.problem, self.advice = key, value, problem, advice

    def at(self, prefix: str) -> ConfigError:
        return bad(f"{prefix}.{self.key}", self.value, self.problem, self.advice)


def require(key: str, value: Any, test: Callable[[Any], bool], wanted: str) -> Any:
    """`value` when test(value) holds, else KeyProblem(key, value, 'must be <wanted>')."""
    if not test(value):
        raise KeyProblem(key, value, f"must be {wanted}")
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
