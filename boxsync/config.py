"""
Settings from the command line, the environment and a TOML file, in that
order of precedence, then the built-in default: one set of rules for the
server's and the client's options.

Each option is a L{Setting}. Its environment variable is C{BOXSYNC_} and its
name in capitals (C{max-upload}: C{BOXSYNC_MAX_UPLOAD}); its key in a file is
its name (C{max-upload}, or C{max_upload}). An empty environment variable
counts as unset.

An on/off switch (or a count, such as C{--verbose}) set in the environment or
a file is turned off from the command line by its negation, C{--no-NAME}.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from attrs import field, frozen

__all__ = [
    "ConfigError",
    "Setting",
    "config_home",
    "find_config",
    "human_size",
    "load",
    "resolve",
    "seconds",
    "size",
    "usage_flags",
    "whole",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """
    A setting or a configuration file that cannot be used: one line saying
    where and why.
    """


def seconds(value: str) -> float:
    """
    A positive, finite number of seconds, such as C{30} or C{0.5}.

    @raise ValueError: if it is not one.
    """
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds (such as 30 or 0.5)") from None
    if not 0 < number < float("inf"):
        raise ValueError(f"a number of seconds must be positive, not {value!r}")
    return number


def whole(value: str, least: int = 0) -> int:
    """
    A whole number no less than C{least}.

    @raise ValueError: if it is not one.
    """
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, not {value!r}") from None
    if number < least:
        raise ValueError(f"must be at least {least}, not {value!r}")
    return number


def folder(value: str) -> Path:
    """
    A folder to keep files in (a client's synced folder, a server's box).

    @raise ValueError: if it is an empty name (what a shell gives for a
        variable that is not set, and which would be the current folder),
        or the root of the file system (every mount below it, C{/proc} and
        C{/dev}).
    """
    if not value.strip():
        raise ValueError("an empty name (is a variable that names it unset?)")
    path = Path(value).expanduser()
    if path.resolve() == Path("/"):
        raise ValueError(f"{value} is the root of the file system: give a folder of its own")
    return path


def size(value: str) -> int:
    """
    A number of bytes, such as C{500}, C{500K}, C{1.5M}, C{50G}, C{2T} (with
    or without C{iB} or C{B}: multiples of 1024).

    @raise ValueError: if it is not a positive size.
    """
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    given = value
    value = value.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if value and value[-1] in units:
            number = int(float(value[:-1]) * units[value[-1]])
        else:
            number = int(value)
    except ValueError:
        raise ValueError(f"{given!r} is not a size (a number of bytes, or of K, M, G or T: 500K, 1.5M)") from None
    if number <= 0:
        raise ValueError(f"a size must be positive, not {given!r}")
    return number


def human_size(size: float) -> str:
    """
    C{size} bytes as people read them: C{512 B}, C{1.5 MiB}, C{2.0 GiB}.
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _env_name(name: str) -> str:
    return "BOXSYNC_" + name.upper().replace("-", "_")


@frozen
class Setting:
    """
    One option.

    @ivar name: its long name on the command line, without the dashes, and
        its key in a file.
    @ivar default: its value when no source gives one (never converted).
    @ivar convert: turns a value given as text (or, from a file, as a
        number) into what the program uses; raises C{ValueError}.
    @ivar env: its environment variables, the first set one winning;
        by default C{BOXSYNC_<NAME>}.
    @ivar flag: an on/off switch (a C{true}/C{false} in a file, C{1}/C{0},
        C{yes}/C{no}, C{on}/C{off} in the environment).
    @ivar multiple: a list (repeatable on the command line, a list in a file,
        separated by white space in the environment).
    @ivar short: its one-letter name on the command line, if any.
    @ivar count: a switch that counts how often it is given on the command
        line (a number in the environment or a file), such as C{--verbose}.
    """

    name: str
    default: Any
    help: str
    convert: Callable[[str], Any] | None = None
    env: tuple[str, ...] = field(default=())
    flag: bool = False
    multiple: bool = False
    short: str | None = None
    count: bool = False

    @property
    def variables(self) -> tuple[str, ...]:
        return self.env or (_env_name(self.name),)

    @property
    def negation(self) -> str | None:
        """
        The name of the option that turns a switch or a count off
        (C{no-NAME}), whatever the environment or a file says; C{None} for a
        setting that takes a value.
        """
        return f"no-{self.name}" if self.flag or self.count else None

    def describe_negation(self) -> str:
        """
        The help of L{negation}, in the style of the setting's own.
        """
        text = f"turn --{self.name} off, whatever {' or '.join(self.variables)} or a file says"
        return text[0].upper() + text[1:] + "." if self.help[:1].isupper() else text

    def describe(self, default: str | None = None) -> str:
        """
        Its help, with where else it can come from and its default.
        """
        shown = default if default is not None else _show(self.default)
        variables = " or ".join(self.variables)
        return f"{self.help} [default: {shown}; env {variables}; config key {self.name}]"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return str(value)


def config_home(environ: Mapping[str, str]) -> Path:
    """
    C{$XDG_CONFIG_HOME}, or C{~/.config}.
    """
    xdg = environ.get("XDG_CONFIG_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".config"


def find_config(
    given: str | None, variable: str, environ: Mapping[str, str], candidates: Iterable[Path]
) -> Path | None:
    """
    The configuration file to read: the one named on the command line, else
    the one the environment variable C{variable} names (either must exist,
    which L{load} checks), else the first of C{candidates} that exists.

    @raise ConfigError: if a candidate cannot be looked at (a home folder
        that is another user's): it may be the file meant.
    """
    if given:
        return Path(given).expanduser()
    if environ.get(variable):
        return Path(environ[variable]).expanduser()
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError as e:
            raise ConfigError(
                f"cannot look for the configuration file {candidate}: {e.strerror or e} "
                f"(set HOME or XDG_CONFIG_HOME to a folder of yours, or name a file with --config)"
            ) from None
    return None


def load(path: Path, settings: Sequence[Setting]) -> dict[str, Any]:
    """
    The settings a TOML file gives, by name, as text (or lists of text, or
    booleans for flags), not yet converted.

    @raise ConfigError: if it cannot be read, is not TOML, or has a key or a
        value that no setting takes.
    """
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the configuration file {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    known = {setting.name: setting for setting in settings}
    values: dict[str, Any] = {}
    for key, value in data.items():
        setting = known.get(key.replace("_", "-"))
        if setting is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        values[setting.name] = _from_file(setting, value, f"{path}: {key}")
    return values


def _from_file(setting: Setting, value: Any, where: str) -> Any:
    if setting.flag:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if setting.multiple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{where} must be a string or a list of strings, not {value!r}")
        return items
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where} must be a string or a number, not {value!r}")
    return str(value)


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, not {text!r}")


def usage_flags(settings: Sequence[Setting]) -> list[list[str | None]]:
    """
    The C{optFlags} of a L{twisted.python.usage.Options} for the switches
    among C{settings}: each one and its negation. L{resolve} reads both from
    the options.
    """
    flags: list[list[str | None]] = []
    for setting in settings:
        if setting.flag:
            flags.append([setting.name, setting.short, setting.describe()])
            flags.append([setting.negation, None, setting.describe_negation()])
    return flags


def _given(setting: Setting, value: Any) -> bool:
    if setting.flag:
        return bool(value)
    if setting.multiple:
        return bool(value)
    return value is not None


def resolve(
    settings: Sequence[Setting],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    file_name: Path | str | None = None,
) -> dict[str, Any]:
    """
    The value of every setting: from the command line (C{given}, by name;
    C{None}, an empty list or an unset flag count as not given), else from the
    environment, else from the file's values (from L{load}), else the default.
    Text from any source goes through the setting's C{convert}. A switch or a
    count whose negation (C{no-NAME}) is given is off (C{False}, or 0).

    @raise ConfigError: naming the source of a value that does not convert,
        or the options if a switch and its negation are both given.
    """
    values: dict[str, Any] = {}
    for setting in settings:
        negation = setting.negation
        if negation is not None and given.get(negation):
            if _given(setting, given.get(setting.name)):
                raise ConfigError(f"--{setting.name} and --{negation} contradict each other")
            values[setting.name] = False if setting.flag else 0
            continue
        value: Any = setting.default
        source = None
        variable = next((name for name in setting.variables if environ.get(name)), None)
        if _given(setting, given.get(setting.name)):
            value, source = given[setting.name], f"--{setting.name}"
        elif variable is not None:
            value, source = environ[variable], variable
            if setting.multiple:
                value = value.split()
        elif setting.name in file:
            value, source = file[setting.name], f"{file_name}: {setting.name}"
        if source is not None:
            try:
                value = _convert(setting, value)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{source}: {e}") from None
        values[setting.name] = value
    return values


def _convert(setting: Setting, value: Any) -> Any:
    if setting.flag:
        return _flag(value) if isinstance(value, str) else bool(value)
    convert = setting.convert
    if convert is None:
        return value
    if setting.multiple:
        return [convert(item) if isinstance(item, str) else item for item in value]
    return convert(value) if isinstance(value, str) else value
