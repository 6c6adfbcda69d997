"""Compose projects: file choice, .env, interpolation and image names, as docker compose."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.compose import (
    interpolate,
    load_project,
    normalize_project_name,
    parse_dotenv,
)
from shipit.errors import UsageError

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${SET}", "value"),
        ("$SET", "value"),
        ("$SET-x", "value-x"),
        ("${UNSET}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("a$", "a$"),
        ("$1", "$1"),
        ("${UNSET:-${SET}-x}:tag", "value-x:tag"),
        ("app:${TAG:-v1}", "app:v1"),
        ("${set}", ""),  # names are case-sensitive
    ],
)
def test_interpolation_follows_compose(template, expected):
    assert interpolate(template, ENV) == expected


@pytest.mark.parametrize("template", ["${}", "${SET", "${1X}", "${SET.x}", "${SET:x}"])
def test_malformed_interpolation_is_one_clear_error(template):
    with pytest.raises(UsageError, match="invalid interpolation format"):
        interpolate(template, ENV)


def test_required_variables():
    assert interpolate("${SET:?need it}", ENV) == "value"
    assert interpolate("${EMPTY?need it}", ENV) == ""
    with pytest.raises(UsageError, match="required variable UNSET is missing a value: need it"):
        interpolate("${UNSET?need it}", ENV)
    with pytest.raises(UsageError, match="required variable EMPTY is missing a value"):
        interpolate("${EMPTY:?}", ENV)


def test_dotenv_like_compose():
    text = (
        "# a comment\n"
        "export TAG=v2 # inline comment\n"
        "NAME = spaced\n"
        'DQ="a\\nb ${TAG}"\n'
        "SQ='kept ${TAG}'\n"
        "FROM_OUTSIDE=${OUTER}-x\n"
        "INHERITED\n"
        "YAMLISH: v\n"
        "DOLLAR=$$TAG\n"
        "EMPTY=\n"
    )
    outside = {"OUTER": "o", "INHERITED": "from-env"}
    assert parse_dotenv(text, outside.get) == {
        "TAG": "v2",
        "NAME": "spaced",
        "DQ": "a\nb v2",
        "SQ": "kept ${TAG}",
        "FROM_OUTSIDE": "o-x",
        "INHERITED": "from-env",
        "YAMLISH": "v",
        "DOLLAR": "$TAG",
        "EMPTY": "",
    }


def test_dotenv_errors_name_the_line():
    with pytest.raises(UsageError, match="line 2: unterminated quoted value"):
        parse_dotenv('A=1\nB="open\n')
    with pytest.raises(UsageError, match="unexpected character"):
        parse_dotenv("A$B=1\n")


@pytest.mark.parametrize(
    ("directory", "expected"),
    [("myapp", "myapp"), ("My App.v2", "myappv2"), ("__x-y_", "x-y_"), ("Ünï", "n")],
)
def test_project_name_normalised_like_compose(directory, expected):
    assert normalize_project_name(directory) == expected


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


COMPOSE = """
services:
  web:
    build: ./web
  worker:
    build:
      context: ./worker
  cache:
    image: redis:${TAG:-v1}
  proxy:
    image: example/proxy
    build: ./proxy
  debug:
    image: busybox
    profiles: [debug]
"""


def test_images_named_as_compose_names_them(tmp_path):
    file = _write(tmp_path / "My_Shop" / "compose.yaml", COMPOSE)
    project = load_project([str(file)], env={})
    assert project.name == "my_shop"
    assert [(s.name, s.image, s.built) for s in project.services] == [
        ("web", "my_shop-web:latest", True),
        ("worker", "my_shop-worker:latest", True),
        ("cache", "redis:v1", False),
        ("proxy", "example/proxy:latest", True),  # image: names a built image too
    ]
    assert project.images() == [
        "my_shop-web:latest",
        "my_shop-worker:latest",
        "redis:v1",
        "example/proxy:latest",
    ]


def test_env_then_dotenv_next_to_the_first_file(tmp_path):
    file = _write(tmp_path / "p" / "compose.yaml", COMPOSE)
    _write(tmp_path / "p" / ".env", "TAG=from-dotenv\nCOMPOSE_PROJECT_NAME=fromdotenv\n")
    project = load_project([str(file)], env={}, cwd=tmp_path)
    assert project.name == "fromdotenv"
    assert "redis:from-dotenv" in project.images()
    project = load_project([str(file)], env={"TAG": "from-env"}, cwd=tmp_path)
    assert "redis:from-env" in project.images()  # the environment wins over .env
    project = load_project([str(file)], env={"COMPOSE_DISABLE_ENV_FILE": "1"}, cwd=tmp_path)
    assert "redis:v1" in project.images()


def test_project_name_precedence(tmp_path):
    file = _write(tmp_path / "dir" / "compose.yaml", "name: From-YAML\n" + COMPOSE)
    assert load_project([str(file)], env={}).name == "from-yaml"
    env = {"COMPOSE_PROJECT_NAME": "fromenv"}
    assert load_project([str(file)], env=env).name == "fromenv"
    assert load_project([str(file)], env=env, project_name="flag").name == "flag"
    with pytest.raises(UsageError, match="invalid project name 'Bad Name'"):
        load_project([str(file)], env={"COMPOSE_PROJECT_NAME": "Bad Name"})


def test_several_files_merge_by_service(tmp_path):
    base = _write(tmp_path / "app" / "compose.yaml", COMPOSE)
    override = _write(
        tmp_path / "other" / "prod.yaml",
        "services:\n  cache:\n    image: redis:prod\n  extra:\n    image: nginx@sha256:"
        + "a" * 64
        + "\n",
    )
    project = load_project([str(base), str(override)], env={})
    assert project.name == "app"  # the first file's directory
    images = project.images()
    assert "redis:prod" in images and "redis:v1" not in images
    assert "nginx@sha256:" + "a" * 64 in images


def test_compose_file_variable_and_discovery(tmp_path):
    _write(tmp_path / "a" / "one.yaml", "services:\n  x:\n    image: one\n")
    _write(tmp_path / "a" / "two.yaml", "services:\n  y:\n    image: two\n")
    env = {"COMPOSE_FILE": "a/one.yaml:a/two.yaml"}
    assert load_project(env=env, cwd=tmp_path).images() == ["one:latest", "two:latest"]
    env = {"COMPOSE_FILE": "a/one.yaml;a/two.yaml", "COMPOSE_PATH_SEPARATOR": ";"}
    assert load_project(env=env, cwd=tmp_path).images() == ["one:latest", "two:latest"]
    # No file named: compose.yaml here or in a parent, with its override file.
    _write(tmp_path / "proj" / "compose.yaml", "services:\n  x:\n    image: base\n")
    _write(tmp_path / "proj" / "compose.override.yml", "services:\n  x:\n    image: over\n")
    (tmp_path / "proj" / "sub").mkdir()
    project = load_project([""], env={}, cwd=tmp_path / "proj" / "sub")
    assert (project.name, project.images()) == ("proj", ["over:latest"])


def test_profiles_and_named_services(tmp_path):
    file = str(_write(tmp_path / "p" / "compose.yaml", COMPOSE))
    assert "busybox:latest" not in load_project([file], env={}).images()
    assert "busybox:latest" in load_project([file], env={"COMPOSE_PROFILES": "debug"}).images()
    named = load_project([file], env={}, services=["debug", "cache"])
    assert [s.name for s in named.services] == ["cache", "debug"]
    with pytest.raises(UsageError, match="no such compose service: nope"):
        load_project([file], env={}, services=["nope"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [a, b]\n", "services must be a mapping"),
        ("services:\n  x: {}\n", "service x has neither image nor build"),
        ("services:\n  x:\n    image: ${MISSING:?set it}\n", "required variable MISSING"),
        ("services:\n  x:\n    image: ${NOPE}\n", "is empty once its variables"),
        ("services:\n  x: [\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, text, message):
    file = _write(tmp_path / "p" / "compose.yaml", text)
    with pytest.raises(UsageError, match=message) as caught:
        load_project([str(file)], env={})
    assert str(file) in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_12_booleans(tmp_path):
    # Compose reads YAML 1.2: a service called "on" is a name, not a boolean.
    file = _write(tmp_path / "p" / "compose.yaml", "services:\n  on:\n    image: yes\n")
    project = load_project([str(file)], env={})
    assert [(s.name, s.image) for s in project.services] == [("on", "yes:latest")]


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_project([str(tmp_path / "nope.yaml")], env={})
    with pytest.raises(UsageError, match="no compose file in"):
        load_project([""], env={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--compose", "--to", "w"], ["--compose=", "--to", "w"]),
        (["--to", "w", "--compose"], ["--to", "w", "--compose="]),
        (["--compose", "c.yaml", "--to", "w"], ["--compose", "c.yaml", "--to", "w"]),
        (["--", "--compose"], ["--", "--compose"]),
    ],
)
def test_a_bare_compose_means_the_files_compose_would_pick(args, expected):
    from shipit.cli.compose import bare_compose

    assert bare_compose(args) == expected


def test_a_missing_image_is_reported_with_its_service(tmp_path):
    from shipit.cli.compose import naming_services
    from shipit.errors import ImageNotFound

    file = _write(tmp_path / "shop" / "compose.yaml", COMPOSE)
    project = load_project([str(file)], env={})
    with pytest.raises(ImageNotFound) as caught, naming_services(project):
        raise ImageNotFound("src: no such image: shop-worker:latest")
    assert str(caught.value) == (
        "compose service worker (image shop-worker:latest): src: no such image: shop-worker:latest"
    )
    assert caught.value.exit_code == 5
    with (
        pytest.raises(ImageNotFound, match="^compose project shop: src: gone$"),
        naming_services(project),
    ):
        raise ImageNotFound("src: gone")


def test_extends_in_the_file_and_from_another(tmp_path):
    _write(
        tmp_path / "common" / "base.yaml",
        "services:\n  built:\n    build: .\n  named:\n    image: shared/base:${TAG:-3}\n",
    )
    file = _write(
        tmp_path / "app" / "compose.yaml",
        "services:\n"
        "  api:\n    extends: {service: built, file: ../common/base.yaml}\n"
        "  db:\n    extends:\n      service: named\n      file: ../common/base.yaml\n"
        "  db2:\n    extends: db\n    image: other\n",
    )
    project = load_project([str(file)], env={})
    assert [(s.name, s.image, s.built) for s in project.services] == [
        ("api", "app-api:latest", True),  # built under the extending service's name
        ("db", "shared/base:3", False),
        ("db2", "other:latest", False),
    ]


def test_extends_errors(tmp_path):
    loop = _write(
        tmp_path / "p" / "compose.yaml",
        "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
    )
    with pytest.raises(UsageError, match="extends goes round in a circle"):
        load_project([str(loop)], env={})
    missing = _write(tmp_path / "q" / "compose.yaml", "services:\n  a:\n    extends: nope\n")
    with pytest.raises(UsageError, match="no service nope for a to extend"):
        load_project([str(missing)], env={})
