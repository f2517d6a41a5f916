"""``orch images``: build the per-hardware Docker images offline, and list them."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import List, Optional

import typer

from orchestrator.cli import app
from orchestrator.images.plan import DEFAULT_BASE_IMAGE
from orchestrator.images.profiles import DEFAULT_PLATFORM, PROFILES, get_profile, profile_dir, wheel_arch

images_app = typer.Typer(help="Per-hardware Docker images, built offline from a wheelhouse.", no_args_is_help=True)
app.add_typer(images_app, name="images")

_PROFILE_HELP = f"Profile to build (repeatable; default: all). One of: {', '.join(PROFILES)}."


def _console():
    from rich.console import Console

    return Console()


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


@images_app.command("base")
def base_cmd(
    tag: str = typer.Option(DEFAULT_BASE_IMAGE, "--tag", "--base-image", help="Tag of the base image to make."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Debian mirror URL (default: the one in /etc/apt)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the tag exists."),
) -> None:
    """Make a Debian bookworm + Python 3.11 base image without a registry (debootstrap + docker import)."""
    from orchestrator.images.base import build_base

    console = _console()
    with console.status(f"debootstrap bookworm -> {tag} ..."):
        result = build_base(tag, mirror=mirror, force=force, log=lambda line: console.print(line, markup=False, highlight=False))
    if result.built:
        console.print(f"built {result.tag} in {result.seconds:.0f} s ({_mb(result.size_bytes)}, mirror {result.mirror})")
    else:
        console.print(f"{result.tag} exists ({_mb(result.size_bytes)}); --force rebuilds it")


@images_app.command("build")
def build_cmd(
    profile: Optional[List[str]] = typer.Option(None, "--profile", "-p", help=_PROFILE_HELP),
    platform: str = typer.Option(DEFAULT_PLATFORM, "--platform", help="linux/amd64 or linux/arm64."),
    base_image: str = typer.Option(DEFAULT_BASE_IMAGE, "--base-image", help="Image to start from (must exist locally)."),
    force: bool = typer.Option(False, "--force", help="Build even when the content-addressed tag exists."),
) -> None:
    """Download each profile's wheelhouse (cached) and build its image through the Docker SDK."""
    from rich.live import Live
    from rich.panel import Panel
    from rich.text import Text

    from orchestrator.errors import is_interrupt
    from orchestrator.images.build import build_image, docker_client
    from orchestrator.images.invariant import check_same_runtime

    names = list(dict.fromkeys(profile or PROFILES))
    for name in names:  # bad input fails before any download or build
        profile_dir(get_profile(name).name)
    wheel_arch(platform)
    client = docker_client()
    console = _console()
    built = {}
    for name in names:
        lines: deque[str] = deque(maxlen=15)

        def view() -> Panel:
            return Panel(Text("\n".join(lines)), title=f"orch images build {name} ({platform})", height=17)

        try:
            with Live(view(), console=console, refresh_per_second=4, transient=True) as live:

                def log(line: str) -> None:
                    lines.append(line.rstrip())
                    live.update(view())

                outcome = build_image(name, platform=platform, base_image=base_image, force=force, client=client,
                                      log=log)
        except BaseException as exc:
            if is_interrupt(exc):
                # The wheelhouse lands in place only when complete, and the engine sets the tag only when
                # a build completes: an interrupted build leaves neither half done.
                console.print(f"images build interrupted during {name}: no new image was tagged", markup=False)
            raise
        house = outcome.wheelhouse
        fetched = f"downloaded in {house.seconds:.0f} s" if house.downloaded else "cached"
        console.print(f"wheelhouse {name}: {len(house.wheels)} wheels, {_mb(house.size_bytes)} ({fetched})")
        if outcome.built:
            console.print(f"built {outcome.plan.tag} in {outcome.seconds:.0f} s ({_mb(outcome.size_bytes)})")
        else:
            console.print(f"{outcome.plan.tag} is up to date ({_mb(outcome.size_bytes)}); --force rebuilds it")
        built[outcome.plan.tag] = outcome.plan.labels
    python, ray = check_same_runtime(built)
    console.print(f"all images share Python {python} and Ray {ray}")


@images_app.command("list")
def list_cmd(
    platform: str = typer.Option(DEFAULT_PLATFORM, "--platform", help="linux/amd64 or linux/arm64."),
    base_image: str = typer.Option(DEFAULT_BASE_IMAGE, "--base-image", help="Base the images were built on."),
) -> None:
    """Show, per profile, whether its current image exists, is stale, or is missing."""
    from rich.table import Table

    from orchestrator.images.build import docker_client, image_status

    wheel_arch(platform)
    client = docker_client()
    table = Table("profile", "state", "size")
    table.add_column("tag", overflow="fold")
    table.add_column("older tags", overflow="fold")
    for name in PROFILES:
        row = image_status(name, platform=platform, base_image=base_image, client=client)
        table.add_row(
            name, row.state, _mb(row.size_bytes) if row.size_bytes else "-",
            row.expected or "(no wheelhouse yet: orch images build)", "\n".join(row.others) or "-",
        )
    _console().print(table)


@images_app.command("lock")
def lock_cmd(
    profile: Optional[List[str]] = typer.Option(None, "--profile", "-p", help=_PROFILE_HELP),
    platform: str = typer.Option(DEFAULT_PLATFORM, "--platform", help="linux/amd64 or linux/arm64."),
) -> None:
    """Resolve each profile's requirements.in into its fully pinned requirements.txt."""
    from orchestrator.images.wheelhouse import lock

    console = _console()
    for name in list(dict.fromkeys(profile or PROFILES)):
        text = lock(name, platform)
        path = Path(profile_dir(name)) / "requirements.txt"
        path.write_text(text)
        console.print(f"wrote {path} ({text.count('==')} pins)")
