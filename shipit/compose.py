"""Compose projects: which images a compose file's services run, named the way
``docker compose`` names them.

    project = load_project(["compose.yaml"])
    project.images()   # ["myapp-web:latest", "redis:7", ...]

The rules follow compose-go, the loader behind ``docker compose``:

- files: the ones given, else ``$COMPOSE_FILE`` (split on ``$COMPOSE_PATH_SEPARATOR``, else
  the OS path separator), else ``compose.yaml`` (and friends, with the override file) in
  the current directory or the nearest parent that has one;
- variables: the environment, then ``.env`` in the current directory and in the first
  file's directory (the environment wins; ``$COMPOSE_DISABLE_ENV_FILE`` turns it off);
  ``${VAR}``, ``$VAR``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
  ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$$`` for a literal ``$``;
- the project name: ``--project-name``/``$COMPOSE_PROJECT_NAME`` (must already be
  lowercase letters, digits, ``-`` and ``_``, starting with a letter or digit), else the
  files' ``name:``, else the first file's directory name, both normalised as compose does;
- a service's image: ``image:`` when set, else (a ``build:`` service) ``<project>-<service>``;
  a name without tag or digest means ``:latest``; ``extends`` (in the same file or
  ``file:``) merges the base service under the extending one first;
- services in profiles are left out unless ``$COMPOSE_PROFILES`` names one of them
  (or the service is asked for by name).

Nothing here talks to an engine; errors are UsageError with one line naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shipit.errors import UsageError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    """The reference to ship, always with a tag or digest."""
    built: bool
    """The service has a ``build:`` section (its image is built, not pulled)."""


@dataclass(frozen=True)
class Project:
    name: str
    files: tuple[Path, ...]
    services: tuple[Service, ...]

    def images(self) -> list[str]:
        """Each image once, in the order the services name them."""
        return list(dict.fromkeys(s.image for s in self.services))

    def services_of(self, image: str) -> list[str]:
        return [s.name for s in self.services if s.image == image]


# Interpolation ------------------------------------------------------------------------

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(UsageError):
    """A ``${...}`` that compose would refuse: malformed, or a required variable unset."""


def interpolate(template: str, env: Mapping[str, str]) -> str:
    """Substitute variables in ``template`` as compose does (an unset variable is empty)."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = template[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing_brace(template, i + 1)
            if end < 0:
                raise InterpolationError(f"invalid interpolation format: {template!r}")
            out.append(_braced(template[i + 2 : end], env, template))
            i = end + 1
        elif match := _NAME.match(template, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:  # a lone "$" stays as it is
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(s: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(s):
        if s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        elif s[i] == "{":
            depth += 1
        i += 1
    return -1


def _braced(body: str, env: Mapping[str, str], template: str) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError(f"invalid interpolation format: {template!r}")
    name, rest = match.group(), body[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"invalid interpolation format: {template!r}")
    arg = rest[len(op) :]
    empty_counts = op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if op.endswith("-"):
        return interpolate(arg, env) if missing else (value or "")
    if op.endswith("+"):  # the alternative when set (":+": and not empty)
        return value or "" if missing else interpolate(arg, env)
    # "?" / ":?": required
    if missing:
        reason = interpolate(arg, env)
        raise InterpolationError(
            f"required variable {name} is missing a value" + (f": {reason}" if reason else "")
        )
    return value or ""


# .env files -----------------------------------------------------------------------------

_SPACE = " \t\v\f\r\x85\xa0"  # whitespace that is not a line break
_ESCAPES = {"a": "\a", "b": "\b", "c": "c", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_SEQ = re.compile(r'\\(?:[abcfnrtv$"\\]|0\d{0,3})')


def _expand_escapes(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        seq = match.group()
        if seq == "\\$":
            return "$$"  # a literal "$", not an interpolation
        if seq.startswith("\\0"):
            return chr(int(seq[2:] or "0", 8))
        return {"v": "\v", '"': '"', "\\": "\\"}.get(seq[1], _ESCAPES.get(seq[1], seq))

    return _ESCAPE_SEQ.sub(one, value)


def parse_dotenv(text: str, lookup: Callable[[str], str | None] = lambda _: None) -> dict[str, str]:
    """Parse a ``.env`` file as compose does. ``lookup`` gives variables from outside
    (the environment), which win over earlier lines when values are interpolated."""
    out: dict[str, str] = {}

    def env_get(key: str) -> str | None:
        found = lookup(key)
        return found if found is not None else out.get(key)

    class _Env(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            found = env_get(key)
            if found is None:
                raise KeyError(key)
            return found

        def __iter__(self) -> Iterator[str]:
            return iter(out)

        def __len__(self) -> int:
            return len(out)

    env = _Env()
    src = text
    line = 1
    while True:
        stripped = src.lstrip()
        line += src[: len(src) - len(stripped)].count("\n")
        src = stripped
        if src.startswith("#"):
            newline = src.find("\n")
            if newline < 0:
                break
            src = src[newline:]
            continue
        if not src:
            break
        if re.match(r"export\s", src):
            src = src[len("export") :].lstrip(_SPACE)
        key, inherited, offset = src, True, len(src)
        for i, char in enumerate(src):
            if char in _SPACE:
                continue
            if char in "=:\n":
                key, inherited, offset = src[:i], char == "\n", i + 1
                break
            if char not in "_.-[]" and not char.isalnum():
                raise UsageError(
                    f"line {line}: unexpected character {char!r} in variable name "
                    f"{src.splitlines()[0]!r}"
                )
        key = key.rstrip()
        if " " in key:
            raise UsageError(f"line {line}: key cannot contain a space")
        rest = src[offset:].lstrip(_SPACE)
        if inherited:
            found = lookup(key)
            if found is not None:
                out[key] = found
            line += 1
            src = rest
            continue
        value, src, line = _dotenv_value(rest, env, line)
        out[key] = value
    return out


def _dotenv_value(src: str, env: Mapping[str, str], line: int) -> tuple[str, str, int]:
    quote = src[:1]
    if quote not in ("'", '"'):
        value, _, rest = src.partition("\n")
        value = value.split(" #", 1)[0].rstrip()
        return interpolate(value, env), rest, line + 1
    chars: list[str] = []
    escaped = False
    start = line
    for i in range(1, len(src)):
        char = src[i]
        if char == "\n":
            line += 1
        if char != quote:
            if not escaped and char == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(char)
            continue
        if escaped:  # an escaped quote
            escaped = False
            chars.append(char)
            continue
        value = "".join(chars)
        if quote == '"':
            value = interpolate(_expand_escapes(value), env)
        return value, src[i + 1 :], line
    first = src.split("\n", 1)[0]
    raise UsageError(f"line {start}: unterminated quoted value {first}")


def _merge_dotenv(environment: dict[str, str], directory: Path, outside: Mapping[str, str]) -> None:
    """Add ``directory/.env`` to ``environment``; what is already set stays."""
    disabled = outside.get("COMPOSE_DISABLE_ENV_FILE", "").strip().lower()
    if disabled in ("1", "t", "true"):
        return
    path = directory / ".env"
    if not path.is_file():
        return
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    try:
        values = parse_dotenv(text, outside.get)
    except UsageError as exc:
        raise exc.context(str(path)) from None
    for key, value in values.items():
        environment.setdefault(key, value)


# Project names ----------------------------------------------------------------------------


def normalize_project_name(name: str) -> str:
    """compose-go's NormalizeProjectName: lowercase, keep [a-z0-9_-], no leading - or _."""
    kept = "".join(re.findall(r"[a-z0-9_-]", name.lower()))
    return kept.lstrip("_-")


def _checked_project_name(name: str) -> str:
    if normalize_project_name(name) != name:
        raise UsageError(
            f"invalid project name {name!r}: must consist only of lowercase alphanumeric "
            "characters, hyphens, and underscores as well as start with a letter or number"
        )
    return name


# YAML ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans, as compose reads them: ``on``/``yes``/``no`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"compose file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"compose file {path}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise UsageError(f"compose file {path}: not valid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"compose file {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"compose file {path}: expected a mapping at the top level")
    return data


# Finding the files ----------------------------------------------------------------------


def _discover(cwd: Path) -> list[Path]:
    directory = cwd
    while True:
        found = [directory / n for n in DEFAULT_FILES if (directory / n).is_file()]
        if found:
            overrides = [directory / n for n in OVERRIDE_FILES if (directory / n).is_file()]
            return [found[0], *overrides[:1]]
        if directory.parent == directory:
            return []
        directory = directory.parent


def _files(
    given: Sequence[str], environment: dict[str, str], outside: Mapping[str, str], cwd: Path
) -> list[Path]:
    named = [f for f in given if f]
    if "-" in named:
        raise UsageError("a compose file from stdin ('-') is not supported; name the file")
    if named:
        files = [cwd / os.path.expanduser(f) for f in named]
        _merge_dotenv(environment, files[0].parent, outside)
        return files
    _merge_dotenv(environment, cwd, outside)
    if "COMPOSE_FILE" in environment:
        separator = environment.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        files = [cwd / f for f in environment["COMPOSE_FILE"].split(separator) if f]
        if not files:
            raise UsageError("$COMPOSE_FILE names no file")
    else:
        files = _discover(cwd)
        if not files:
            raise UsageError(
                f"no compose file in {cwd} or above ({', '.join(DEFAULT_FILES)}); "
                "name one with --compose FILE"
            )
    _merge_dotenv(environment, files[0].parent, outside)
    return files


# The project ----------------------------------------------------------------------------


def _with_tag(image: str) -> str:
    """``name`` means ``name:latest``, as for docker pull and compose."""
    last = image.rsplit("/", 1)[-1]
    return image if ("@" in last or ":" in last) else f"{image}:latest"


def _text(value: Any, what: str, path: Path, environment: Mapping[str, str]) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise UsageError(f"compose file {path}: {what} must be a string")
    try:
        return interpolate(str(value), environment)
    except UsageError as exc:
        raise exc.context(f"compose file {path}: {what}") from None


def _services(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    section = data.get("services") or {}
    if not isinstance(section, dict):
        raise UsageError(f"compose file {path}: services must be a mapping")
    for name, service in section.items():
        if not isinstance(service, dict | None):
            raise UsageError(f"compose file {path}: service {name!r} must be a mapping")
    return {str(name): service or {} for name, service in section.items()}


def _extended(
    services: dict[str, dict[str, Any]],
    name: str,
    path: Path,
    environment: Mapping[str, str],
    seen: tuple[tuple[Path, str], ...],
) -> dict[str, Any]:
    """A service with what it ``extends`` (in its own file or ``file:``) merged under it."""
    service = services[name]
    extends = service.get("extends")
    if extends is None:
        return service
    if isinstance(extends, str):
        base_name, base_file = extends, None
    elif isinstance(extends, dict) and isinstance(extends.get("service"), str):
        base_name, base_file = extends["service"], extends.get("file")
    else:
        raise UsageError(f"compose file {path}: service {name}: extends names no service")
    base_path, base_services = path, services
    if base_file is not None:
        where = _text(base_file, f"service {name}: extends file", path, environment)
        base_path = path.parent / os.path.expanduser(where)
        base_services = _services(_read_yaml(base_path), base_path)
    if base_name not in base_services:
        raise UsageError(f"compose file {base_path}: no service {base_name} for {name} to extend")
    if (base_path, base_name) in seen:
        raise UsageError(f"compose file {path}: service {name}: extends goes round in a circle")
    base = _extended(
        base_services, base_name, base_path, environment, (*seen, (base_path, base_name))
    )
    return {
        **{k: v for k, v in base.items() if k != "extends"},
        **{k: v for k, v in service.items() if k != "extends"},
    }


def load_project(
    files: Sequence[str] = (),
    *,
    project_name: str | None = None,
    services: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Project:
    """The services of a compose project and the images they run.

    ``files`` empty (or only ``""``): ``$COMPOSE_FILE``, else the default file found from
    ``cwd`` up. ``services``: only these (by name); default every service whose profiles
    are active. ``env`` defaults to os.environ."""
    outside = dict(os.environ if env is None else env)
    here = Path(os.getcwd() if cwd is None else cwd).absolute()
    environment = dict(outside)
    paths = _files(files, environment, outside, here)

    merged: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    named_in_files = ""
    for path in paths:
        data = _read_yaml(path)
        if data.get("name") not in (None, ""):
            named_in_files = _text(data["name"], "name", path, environment)
        section = _services(data, path)
        for name in section:
            service = _extended(section, name, path, environment, ((path, name),))
            merged[name] = {**merged.get(name, {}), **service}
            origin[name] = path

    imperative = project_name or environment.get("COMPOSE_PROJECT_NAME") or ""
    if imperative:
        name = _checked_project_name(imperative)
    elif named_in_files:
        name = normalize_project_name(named_in_files)
    else:
        name = normalize_project_name(paths[0].parent.name)
    if not name:
        raise UsageError(
            f"compose project name is empty (from the directory {paths[0].parent}); "
            "set one with --project-name or $COMPOSE_PROJECT_NAME"
        )

    unknown = [s for s in services if s not in merged]
    if unknown:
        raise UsageError(f"no such compose service: {', '.join(unknown)}")
    active = {p.strip() for p in environment.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    chosen: list[Service] = []
    for service_name, service in merged.items():
        path = origin[service_name]
        if services and service_name not in services:
            continue
        profiles = service.get("profiles") or []
        if not services and profiles:
            if not isinstance(profiles, list):
                raise UsageError(f"compose file {path}: {service_name}: profiles must be a list")
            wanted = {_text(p, "profiles", path, environment) for p in profiles}
            if "*" not in active and not wanted & active:
                continue
        built = service.get("build") is not None
        image = service.get("image")
        if image not in (None, ""):
            ref = _text(image, f"service {service_name}: image", path, environment)
            if not ref.strip():
                raise UsageError(
                    f"compose file {path}: service {service_name}: image {image!r} is empty "
                    "once its variables are substituted"
                )
        elif built:
            ref = f"{name}-{service_name}"
        else:
            raise UsageError(
                f"compose file {path}: service {service_name} has neither image nor build"
            )
        chosen.append(Service(service_name, _with_tag(ref.strip()), built))
    if not chosen:
        raise UsageError(f"compose project {name} has no service to ship")
    return Project(name=name, files=tuple(paths), services=tuple(chosen))
