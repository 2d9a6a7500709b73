# SPDX-License-Identifier: GPL-2.0-or-later
"""The Koji-side decisions of a host-image build, kept free of kojid and the hub.

The builder plugin (plugins/builder/hostimage.py) is thin glue around kojid's classes;
everything it decides lives here so it can be tested without a Koji instance:

- which arches to build, and which of them may fail (``plan_arches``);
- what the uploaded files and logs are called (``upload_names``): every arch of one build
  lands in the same Koji image directory, so names must be unique per arch (and logs per
  attempt, so a retried task does not overwrite the first attempt's log);
- the ``rpmlist`` kojihub's ``importImageInternal`` records (``rpmlist_from_manifest``);
- which earlier builds of the same name to make static deltas from, and where Koji
  serves their archives (``pick_previous_builds``, ``previous_archive_url``);
- the per-arch task result ``completeImageBuild`` / ``moveImageBuildToScratch`` read
  (``task_result``);
- the builder's own configuration file (``load_builder_config``).

Real Koji interfaces these follow (koji-project/koji):
``kojihub.HostExports.completeImageBuild`` -> ``importImage`` -> ``importImageInternal``
imports each name in ``files`` as an ``image`` archive (``import_archive_internal`` puts
every arch's files into the one ``pathinfo.imagebuild(build)`` directory and refuses a
name that already exists) and moves the task's ``*.log`` files into the build's logs;
``add_external_rpm`` needs name, version, release, epoch, arch, payloadhash, size and
buildtime on each external rpmlist entry; ``moveImageBuildToScratch`` skips results
without ``task_id`` (a failed failable arch) and moves ``files`` + ``logs``.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import koji

from koji_hostimage.errors import HostImageError
from koji_hostimage.fsutil import atomic_output
from koji_hostimage.manifest import HostImageManifest
from koji_hostimage.pipeline import DEFAULT_SERVER_CMD

from .options import ENGINES, MAX_DELTA_COUNT, treefile_path_error

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/kojid/plugins/hostimage.conf"
CONFIG_SECTION = "hostimage"

# The install group of the buildroot: a comps group in the build tag that pulls in the
# compose engine (rpm-ostree, ostree, and for the dnf engine dnf + ostree).
DEFAULT_INSTALL_GROUP = "hostimage-build"
DEFAULT_CHANNEL = "image"


class KojiBuildError(HostImageError):
    """The Koji side of a build cannot go on (arches, options, previous builds, config)."""


# --------------------------------------------------------------------------- arches


@dataclass(frozen=True)
class ArchPlan:
    """The arches one build fans out to, in order; ``failable`` is a subset of ``arches``."""

    arches: tuple[str, ...]
    failable: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # requested, but not arches of the build tag

    def is_failable(self, arch: str) -> bool:
        return arch in self.failable


def tag_arches(build_config: Mapping[str, Any]) -> list[str]:
    """The canonical arches of a build tag (``getBuildConfig(...)['arches']``, a string)."""
    arches = (build_config.get("arches") or "").split()
    if not arches:
        raise KojiBuildError(
            f"build tag {build_config.get('name')!r}: arches: expected a non-empty list of"
            " arches, got none (set them with koji edit-tag --arches)"
        )
    return _unique(koji.canonArch(arch) for arch in arches)


def plan_arches(
    tag_arch_list: Sequence[str],
    requested: Sequence[str] | None = None,
    failable: Sequence[str] | None = None,
) -> ArchPlan:
    """Intersect the requested arches with the build tag's (DESIGN section 7).

    No request means every tag arch. Requested arches the tag does not have are dropped
    (and reported); nothing left is an error naming both lists. Failable arches only
    count for arches that are built.
    """
    tag_set = {koji.canonArch(arch) for arch in tag_arch_list}
    wanted = _unique(requested) if requested else _unique(tag_arch_list)
    arches = [arch for arch in wanted if koji.canonArch(arch) in tag_set]
    dropped = [arch for arch in wanted if koji.canonArch(arch) not in tag_set]
    if not arches:
        raise KojiBuildError(
            f"arches: expected at least one of the build tag's arches"
            f" ({', '.join(tag_arch_list)}), got {', '.join(wanted) or 'none'}"
        )
    if dropped:
        log.warning("not building %s: not arches of the build tag", ", ".join(dropped))
    can_fail = [arch for arch in _unique(failable or ()) if arch in arches]
    return ArchPlan(tuple(arches), tuple(can_fail), tuple(dropped))


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def all_failed(results: Mapping[Any, Any]) -> bool:
    """True when every subtask result is a fault (kojid's image tasks' own rule)."""
    return all(isinstance(r, dict) and "faultCode" in r for r in results.values())


def failed_arches(subtasks: Mapping[str, int], results: Mapping[Any, Any]) -> list[str]:
    """Arches whose subtask result is a fault (only failable arches get this far)."""
    return [
        arch
        for arch, task_id in subtasks.items()
        if isinstance(results.get(task_id), dict) and "faultCode" in results[task_id]
    ]


# --------------------------------------------------------------------------- names


def default_name(treefile: str) -> str:
    """The build name when opts give none: the treefile's file name without suffix."""
    stem = Path(treefile).name
    for suffix in (".yaml", ".yml", ".json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


@dataclass(frozen=True)
class UploadNames:
    """File names in the task output directory (and, after import, the build's)."""

    archive: str
    manifest: str
    compose_json: str
    task_log: str  # this task's own steps and its error, if any
    compose_log: str  # every command run in the buildroot, with its output
    checkout_log: str  # the SCM checkout (koji.daemon.SCM.checkout writes it)

    @property
    def files(self) -> list[str]:
        return [self.archive, self.manifest, self.compose_json]

    @property
    def logs(self) -> list[str]:
        return [self.task_log, self.compose_log, self.checkout_log]


def upload_names(nvr: str, arch: str, attempt: str | int) -> UploadNames:
    """Names for ``nvr`` on ``arch``; ``attempt`` tells retries of one task apart.

    The plugin passes the buildroot id, which the hub hands out anew for every attempt.
    """
    tag = f"{arch}-{attempt}"
    return UploadNames(
        archive=f"{nvr}.{arch}.oci.tar",
        manifest=f"{nvr}.{arch}.hostimage.json",
        compose_json=f"{nvr}.{arch}.compose.json",
        task_log=f"hostimage-{tag}.log",
        compose_log=f"compose-{tag}.log",
        checkout_log=f"checkout-{tag}.log",
    )


def substitute_arch(url: str, arch: str) -> str:
    """Expand ``$arch`` and ``$basearch`` in a user repo URL (kiwi/pungi convention)."""
    return url.replace("$basearch", arch).replace("$arch", arch)


def koji_repo_url(topurl: str, repo_id: int, build_tag_name: str, arch: str) -> str:
    """The build tag's repo for ``arch`` on Koji's web server (kiwi's createKiwiImage)."""
    repopath = koji.PathInfo(topdir=topurl).repo(repo_id, build_tag_name)
    return f"{repopath}/{arch}"


def check_treefile_path(relative: str) -> None:
    """A treefile path must stay inside the checkout (the hub's rule, options.py)."""
    problem = treefile_path_error(relative)
    if problem:
        raise KojiBuildError(problem)


def treefile_in_checkout(root: Path, relative: str) -> Path:
    """``root/relative``, refusing one that leaves the checkout, also through a symlink
    (the treefile is read on the builder host, outside the chroot)."""
    check_treefile_path(relative)
    path = root / os.path.normpath(relative)
    if not path.resolve().is_relative_to(root.resolve()):
        raise KojiBuildError(
            f"treefile: expected a path inside the SCM checkout, got {relative!r}"
            " (a symlink leading out of it)"
        )
    return path


# Local-path transports: allowed for the builder's configured base image only, never from
# a user's opts (they would read files of the builder host into the image).
LOCAL_TRANSPORTS = ("oci-archive:", "oci:", "docker-archive:", "dir:")


def base_image_source(user_ref: str | None, config_ref: str | None) -> Path | str | None:
    """The base image to build on: None for none, a Path for the configured local OCI
    archive (used in place), else the reference for ``skopeo copy``.

    A user's reference (``opts['base_image']``, preferred over the config's) must be a
    registry one: a local-path transport is refused.
    """
    if user_ref and user_ref.startswith(LOCAL_TRANSPORTS):
        raise KojiBuildError(
            f"base_image: expected a registry reference (docker://...), got {user_ref!r};"
            " local paths are only allowed in the builder's config"
        )
    ref = user_ref or config_ref
    if not ref:
        return None
    if ref.startswith("oci-archive:"):
        return Path(ref[len("oci-archive:") :].split(":", 1)[0])
    return ref


# --------------------------------------------------------------------------- rpmlist


def rpmlist_from_manifest(manifest: HostImageManifest) -> list[dict[str, Any]]:
    """The image's packages as kojihub wants them for the image_listing.

    Internal RPMs are matched by NVRA (``get_rpm``); external ones are added with
    ``add_external_rpm``, which checks that every field below is present with its type.
    The composed tree's rpmdb does not keep payload digests or package sizes, so these are
    empty, exactly as kiwi's ``getImagePackages`` reports them.
    """
    return [
        {
            "name": pkg.name,
            "epoch": pkg.epoch,
            "version": pkg.version,
            "release": pkg.release,
            "arch": pkg.arch,
            "payloadhash": "",
            "size": 0,
            "buildtime": 0,
        }
        for pkg in sorted(manifest.packages)
    ]


# --------------------------------------------------------------------------- deltas


@dataclass(frozen=True)
class DeltaPlan:
    """Which earlier builds to make static deltas from: the latest ``count`` tagged ones,
    or exactly the builds named in ``nvrs``."""

    count: int = 0
    nvrs: tuple[str, ...] = ()


def delta_plan(delta_from: Any, default_count: int) -> DeltaPlan:
    """Read the ``delta_from`` option (see koji_hostimage.koji.options) or the config default."""
    if delta_from is None:
        return DeltaPlan(count=default_count)
    if delta_from == "none":
        return DeltaPlan()
    if isinstance(delta_from, bool):
        raise KojiBuildError(f"delta_from: expected 'none', a count or NVRs, got {delta_from!r}")
    if isinstance(delta_from, int):
        if not 0 <= delta_from <= MAX_DELTA_COUNT:
            raise KojiBuildError(
                f"delta_from: expected a count from 0 to {MAX_DELTA_COUNT}, got {delta_from}"
            )
        return DeltaPlan(count=delta_from)
    if isinstance(delta_from, list) and all(isinstance(n, str) for n in delta_from):
        return DeltaPlan(nvrs=tuple(_unique(delta_from)))
    raise KojiBuildError(f"delta_from: expected 'none', a count or NVRs, got {delta_from!r}")


def pick_previous_builds(
    tagged: Iterable[Mapping[str, Any]], name: str, count: int, exclude_nvr: str | None = None
) -> list[Mapping[str, Any]]:
    """The latest ``count`` complete builds of ``name`` from ``listTagged`` output.

    Newest first, by build id (listTagged's own order follows tagging events, which an
    untag and retag can reorder). The build being made is never its own delta source.
    """
    complete = koji.BUILD_STATES["COMPLETE"]
    candidates = [
        build
        for build in tagged
        if build.get("name") == name
        and build.get("nvr") != exclude_nvr
        and build.get("state", complete) == complete
    ]
    candidates.sort(key=lambda b: b.get("build_id", b.get("id", 0)), reverse=True)
    unique: dict[Any, Mapping[str, Any]] = {}
    for build in candidates:
        unique.setdefault(build.get("build_id", build.get("id")), build)
    return list(unique.values())[:count]


def pick_archive(archives: Iterable[Mapping[str, Any]], arch: str) -> Mapping[str, Any] | None:
    """The OCI archive for ``arch`` among a build's archives (``listArchives`` output)."""
    suffix = f".{arch}.oci.tar"
    for archive in archives:
        if archive.get("filename", "").endswith(suffix):
            return archive
    return None


def previous_archive_url(topurl: str, build: Mapping[str, Any], filename: str) -> str:
    """Where Koji's web server serves an image file of ``build`` (pathinfo.imagebuild)."""
    return f"{koji.PathInfo(topdir=topurl).imagebuild(build)}/{filename}"


def download(url: str, dest: Path, timeout: float = 600.0) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary file (nothing half-written)."""
    import requests  # deferred: only a builder fetching previous builds needs it

    dest = Path(dest)
    try:
        with atomic_output(dest) as tmp, open(tmp, "wb") as out:
            with requests.get(url, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise KojiBuildError(
                        f"{url}: expected HTTP 200, got {response.status_code} {response.reason}"
                    )
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise KojiBuildError(f"{url}: download failed: {exc}") from exc
    return dest


# --------------------------------------------------------------------------- results


def task_result(
    *,
    task_id: int,
    arch: str,
    name: str,
    version: str,
    release: str,
    names: UploadNames,
    files: list[str],
    logs: list[str],
    rpmlist: list[dict[str, Any]],
    manifest: HostImageManifest,
) -> dict[str, Any]:
    """The dict createHostImage returns, the shape kojid's image tasks return.

    ``completeImageBuild`` imports ``files`` (paths relative to the task directory) and
    records ``rpmlist``; ``arch`` is the image archive's type info; ``files`` and ``logs``
    must name files that were uploaded (``moveImageBuildToScratch`` moves each one). The
    rest is for people and tools reading the task result (XML-RPC safe: no None).
    """
    return {
        "arch": arch,
        "task_id": task_id,
        "name": name,
        "version": version,
        "release": release,
        "files": list(files),
        "logs": list(logs),
        "rpmlist": rpmlist,
        "ref": manifest.ref,
        "commit": manifest.commit,
        "manifest": names.manifest,
        "archive": names.archive,
    }


# --------------------------------------------------------------------------- config


@dataclass
class BuilderConfig:
    """The builder plugin's settings (conf/kojid/hostimage.conf documents each one)."""

    engine: str = "rpm-ostree"
    install_group: str = DEFAULT_INSTALL_GROUP
    channel: str = DEFAULT_CHANNEL
    base_image: str | None = None
    sign_key: str | None = None
    gpg_homedir: Path | None = None
    delta_from: int = 1
    server_cmd: list[str] = field(default_factory=lambda: list(DEFAULT_SERVER_CMD))
    compose_timeout: float = 4 * 3600.0
    download_timeout: float = 600.0
    cancel_grace: float = 5.0


def load_builder_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_FILE) -> BuilderConfig:
    """Read the plugin config with ``koji.read_config_files``; a missing file means defaults."""
    path = str(path)
    config = BuilderConfig()
    if not os.path.exists(path):
        log.info("%s not found: using the built-in defaults", path)
        return config
    try:
        parser = koji.read_config_files([(path, True)], raw=True)
    except Exception as exc:  # configparser errors carry the line; keep the file name
        raise KojiBuildError(f"{path}: cannot read: {exc}") from exc
    if not parser.has_section(CONFIG_SECTION):
        raise KojiBuildError(f"{path}: expected a [{CONFIG_SECTION}] section, got none")
    section = parser[CONFIG_SECTION]
    known = set(BuilderConfig.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        raise KojiBuildError(
            f"{path}: [{CONFIG_SECTION}] {', '.join(unknown)}: unknown option(s);"
            f" expected only {', '.join(sorted(known))}"
        )

    def text(key: str) -> str | None:
        value = section.get(key, "").strip()
        return value or None

    def number(key: str, minimum: float, kind: type = float) -> Any:
        raw = section.get(key)
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] {key}: expected a {kind.__name__}, got {raw!r}"
            ) from None
        if value < minimum:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] {key}: expected at least {minimum}, got {raw!r}"
            )
        return value

    if "engine" in section:
        engine = section["engine"].strip()
        if engine not in ENGINES:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] engine: expected one of {', '.join(ENGINES)},"
                f" got {engine!r}"
            )
        config.engine = engine
    config.install_group = text("install_group") or config.install_group
    config.channel = text("channel") or config.channel
    config.base_image = text("base_image")
    config.sign_key = text("sign_key")
    homedir = text("gpg_homedir")
    config.gpg_homedir = Path(homedir) if homedir else None
    if "delta_from" in section:
        config.delta_from = number("delta_from", 0, int)
        if config.delta_from > MAX_DELTA_COUNT:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] delta_from: expected at most {MAX_DELTA_COUNT},"
                f" got {config.delta_from}"
            )
    if text("server_cmd"):
        # shlex only splits the configured words into an argv; nothing runs a shell.
        config.server_cmd = shlex.split(section["server_cmd"])
    for key in ("compose_timeout", "download_timeout", "cancel_grace"):
        if key in section:
            setattr(config, key, number(key, 0))
    return config
