"""``shipit --compose FILE --to TARGET``: ship every image of a Compose project at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from shipit.errors import ImageNotFound

if TYPE_CHECKING:  # PyYAML loads only when a compose file is read
    from shipit.compose import Project

ComposeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--compose",
        "-f",
        metavar="FILE",
        help="Ship a Compose project's images; repeat for more files (bare: as compose).",
        show_default=False,
    ),
]
ProjectNameOption = Annotated[
    str | None,
    typer.Option(
        "--project-name",
        metavar="NAME",
        help="Compose project name [default: as docker compose names it].",
        show_default=False,
    ),
]


def bare_compose(args: list[str]) -> list[str]:
    """``--compose`` with no FILE after it (end of line or another option) means the
    files docker compose would pick: pass it on as ``--compose=``."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--compose" and (following is None or following.startswith("-")):
            out.append("--compose=")
        else:
            out.append(arg)
    return out


def images_to_ship(
    images: list[str] | None, compose: list[str] | None, project_name: str | None
) -> tuple[list[str], Project | None]:
    """The images to ship: as named, or (with --compose) the project's services' images,
    IMAGE arguments then naming services."""
    if compose is None and project_name is None:
        return list(images or []), None
    from shipit.compose import load_project

    project = load_project(compose or [], project_name=project_name, services=images or [])
    return project.images(), project


@contextmanager
def naming_services(project: Project | None) -> Iterator[None]:
    """An image the source lacks is reported with the compose service that names it."""
    try:
        yield
    except ImageNotFound as exc:
        if project is None:
            raise
        message = str(exc)
        # The longest image name the message ends with (or mentions) is the missing one.
        for image in sorted(project.images(), key=len, reverse=True):
            short = image.removesuffix(":latest")
            if message.endswith((image, short)) or f" {image}" in message:
                services = ", ".join(project.services_of(image))
                raise exc.context(f"compose service {services} (image {image})") from None
        raise exc.context(f"compose project {project.name}") from None
