# SPDX-License-Identifier: GPL-2.0-or-later
"""The Koji-side decisions of a host-image build, kept free of kojid and the hub.

The builder plugin (plugins/builder/hostimage.py) is thin glue around kojid's classes;
everything it decides lives here so it can be tested without a Koji instance:

- which arches to build, and which of them may fail (``plan_arches``);
- what the uploaded files and logs are called (``upload_names``): every arch of one build
  lands in the same Koji image directory, so names must be unique per arch (and logs per
  attempt, so a retried task does not overwrite the first attempt's log);
- the repos, treefile and base image of the compose, and the pipeline request
  (``build_request``);
- the build's version (``next_build_version``) and the tag's mock chroot
  (``check_chroot_mode``);
- the per-arch task result ``completeImageBuild`` / ``moveImageBuildToScratch`` read
  (``task_result``) and the logs that go with it (``task_log``, ``log_uploads``).
Earlier builds (seed, deltas) are in previous.py, the image's rpmlist and its check in
rpmlist.py, the plugin's settings in config.py.

Real Koji interfaces these follow (koji-project/koji):
``kojihub.HostExports.completeImageBuild`` -> ``importImage`` -> ``importImageInternal``
imports each name in ``files`` as an ``image`` archive (``import_archive_internal`` puts
every arch's files into the one ``pathinfo.imagebuild(build)`` directory and refuses a
name that already exists) and moves the task's ``*.log`` files into the build's logs;
``add_external_rpm`` needs name, version, release, epoch, arch, payloadhash, size and
buildtime on each external rpmlist entry (read from the tree's rpmdb, as kojid's
``getPackageList`` reads a buildroot's); ``moveImageBuildToScratch`` skips results
without ``task_id`` (a failed failable arch) and moves ``files`` + ``logs``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import koji
import koji.tasks

from koji_hostimage.errors import KojiBuildError
from koji_hostimage.image.oci_layout import koji_arch_to_oci
from koji_hostimage.image.serverlayer import find_busybox
from koji_hostimage.manifest import HostImageManifest, Source
from koji_hostimage.pipeline import BuildRequest, BuildResult
from koji_hostimage.runner import CommandRunner, HostRunner, run_checked
from koji_hostimage.treefile.load import load_treefile
from koji_hostimage.treefile.version import automatic_version

from .config import BuilderConfig
from .options import VERSION_PATTERN, treefile_path_error

log = logging.getLogger(__name__)

# How a task handler learns that its task is over: kojid's TaskManager signals the task
# process when the task is cancelled (SIGINT: KeyboardInterrupt; later SIGTERM/SIGKILL),
# and koji.tasks raises ServerExit when kojid shuts down.
TASK_ENDING = (SystemExit, koji.tasks.ServerExit, KeyboardInterrupt)

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


# --------------------------------------------------------------------------- versions

# The version of a build whose treefile has no automatic-version-prefix and whose opts
# give none: the UTC date, numbered per day (20261202.0, 20261202.1, ...).
DEFAULT_VERSION_PREFIX = "<date:%Y%m%d>"
_KOJI_VERSION = re.compile(VERSION_PATTERN)


def treefile_version_keys(checkout: Path, treefile: str, arch: str) -> dict[str, Any]:
    """The ``automatic-version-*`` keys of ``treefile`` in an SCM checkout, includes
    resolved (only files inside the checkout are read)."""
    data = load_treefile(treefile_in_checkout(checkout, treefile), arch, root=checkout).data
    return {key: data[key] for key in ("automatic-version-prefix", "automatic-version-suffix")
            if key in data}


def next_build_version(
    version_keys: Mapping[str, Any],
    last_version: str | None,
    now: dt.datetime,
    taken: Callable[[str], bool],
) -> str:
    """The version of a new build: the one rpm-ostree's ``automatic-version-prefix`` gives
    after ``last_version`` (the latest tagged build's), stepped on while Koji already has
    a build of that version (``taken``), so every build gets its own ostree version.

    The version is the same for every arch (the parent task picks it) and is both the
    Koji build's version and the commits' ``version`` metadata.
    """
    keys = dict(version_keys)
    keys.setdefault("automatic-version-prefix", DEFAULT_VERSION_PREFIX)
    version = automatic_version(keys, last_version, now)
    for _ in range(1000):
        if not version or not _KOJI_VERSION.fullmatch(version):
            raise KojiBuildError(
                f"treefile: automatic-version-prefix {keys['automatic-version-prefix']!r}:"
                f" expected versions Koji accepts (letters, digits and _.+~^), got"
                f" {version!r}; give the version with --version"
            )
        if not taken(version):
            return version
        version = automatic_version(keys, version, now)
    raise KojiBuildError(f"no free version after {version!r}: give one with --version")


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


def fetch_base_image(
    user_ref: str | None, config_ref: str | None, arch: str, dest_dir: Path
) -> Path | None:
    """The base image as a local OCI archive: the configured local one in place, a
    registry reference copied for ``arch`` with skopeo into ``dest_dir``; None for none."""
    ref = base_image_source(user_ref, config_ref)
    if ref is None or isinstance(ref, Path):
        return ref
    dest = Path(dest_dir) / "base-image.oci.tar"
    log.info("copying base image %s", ref)
    argv = ["skopeo", "copy", "--override-arch", koji_arch_to_oci(arch), ref,
            f"oci-archive:{dest}"]
    run_checked(argv, what="skopeo copy (base image)")
    return dest


# --------------------------------------------------------------------------- the build


NEW_CHROOT_KEY = "mock.new_chroot"


def check_chroot_mode(buildconfig: Mapping[str, Any], engine: str) -> None:
    """Refuse the rpm-ostree engine in a build tag whose mock runs a plain chroot.

    ``rpm-ostree compose tree`` starts with a bubblewrap self-test
    (coreos/rpm-ostree src/app/rpmostree-compose-builtin-tree.cxx -> rust/src/bwrap.rs
    ``bubblewrap_selftest``), which fails in a plain chroot where ``/`` is no mount
    point ("Failed to make / slave"). Under mock's systemd-nspawn chroot it works:
    bwrap.rs ``running_in_nspawn`` skips ``--unshare-net`` there for "rpm-ostree in mock
    in koji", and pungi's ostree phase runs it so. kojid passes ``--new-chroot`` or
    ``--old-chroot`` only when the tag's extra sets ``mock.new_chroot`` (builder/kojid
    ``BuildRoot.mock``); unset means mock's default, nspawn. The dnf engine runs no
    bubblewrap and works in both.
    """
    extra = buildconfig.get("extra") or {}
    if engine != "rpm-ostree" or NEW_CHROOT_KEY not in extra or _truthy(extra[NEW_CHROOT_KEY]):
        return
    tag = buildconfig.get("name")
    raise KojiBuildError(
        f"build tag {tag}: extra {NEW_CHROOT_KEY}: expected unset or 1 (mock's"
        f" systemd-nspawn chroot), got {extra[NEW_CHROOT_KEY]!r}: rpm-ostree's bubblewrap"
        " self-test fails in mock's plain chroot ('Failed to make / slave'). Remove it:"
        f" koji edit-tag {tag} --remove-extra={NEW_CHROOT_KEY} (or use the dnf engine)"
    )


def _truthy(value: Any) -> bool:
    """A tag extra value as kojid's ``if extra[key]`` reads it; CLI strings too."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def compose_repos(
    koji_repo: str, user_repos: Sequence[str], arch: str, use_buildroot_repo: bool | None
) -> list[str]:
    """The repos the compose reads, ``$arch`` expanded.

    Given repos replace the build tag's repo unless ``use_buildroot_repo`` asks for it
    too (koji-project/koji plugins/builder/kiwi.py ``createKiwiImage`` appends it after
    the user's repos only when asked; osbuild/koji-image-builder the same). With no repos
    given the build tag's repo is the default: a pungi compose passes its own repos, so
    dnf never takes newer packages from the tag that the compose does not ship.
    """
    repos = [substitute_arch(url, arch) for url in user_repos]
    if use_buildroot_repo or (use_buildroot_repo is None and not repos):
        repos.append(koji_repo)
    return repos


def scm_revision(source: str) -> str | None:
    """The checked-out revision from ``koji.daemon.SCM.get_source()['source']``
    (koji-project/koji koji/daemon.py): for git it is the URL with ``git rev-parse HEAD``
    as the fragment (``git+https://host/repo.git#<sha1>``); other SCMs give the URL as
    requested, whose fragment is the ref asked for."""
    return source.rsplit("#", 1)[1] if "#" in source else None


def scm_commit_time(checkout: Path, runner: CommandRunner | None = None) -> int | None:
    """SOURCE_DATE_EPOCH for a build from ``checkout``: the checked-out commit's committer
    time (``git log -1 --format=%ct``), so that the commit, and with it every date in the
    archive, depends on the source, not on when it was built. None (the build is dated
    now) when ``checkout`` is not a git work tree (another SCM)."""
    argv = ["git", "-c", "safe.directory=*", "log", "-1", "--format=%ct"]
    try:
        result = (runner or HostRunner()).run(argv, cwd=Path(checkout))
    except OSError as exc:
        log.warning("%s: cannot run git (%s): the build is dated now", checkout, exc.strerror)
        return None
    text = result.output.strip()
    if result.returncode != 0 or not text.isascii() or not text.isdigit():
        log.warning("%s: no git commit time (%s): the build is dated now", checkout,
                    text.splitlines()[-1] if text else f"exit {result.returncode}")
        return None
    return int(text)


def build_request(
    *,
    opts: Mapping[str, Any],
    config: BuilderConfig,
    treefile: Path,
    output_dir: Path,
    workdir: Path,
    arch: str,
    name: str,
    version: str,
    release: str,
    koji_repo: str,
    previous: Sequence[Path],
    base_image: Path | None,
    source: Source,
    runner: CommandRunner,
    source_root: Path | None = None,
    seed: Path | None = None,
    source_date_epoch: int | None = None,
) -> BuildRequest:
    """The pipeline request of one createHostImage task. ``opts`` has every option
    (``options.with_defaults``); where it leaves one unset, the builder's config holds."""
    return BuildRequest(
        treefile=treefile,
        output_dir=output_dir,
        arch=arch,
        name=name,
        version=version,
        release=str(release),
        engine=opts["engine"] or config.engine,
        extra_repos=compose_repos(koji_repo, opts["repo"], arch, opts["use_buildroot_repo"]),
        previous=list(previous),
        # the compose continues from the latest build's commit (users' IDs, version
        # numbering, parent); a new Koji build is a new commit even when nothing changed
        seed=seed,
        force_nocache=True,
        base_image=base_image,
        sign_key=opts["sign_key"] or config.sign_key,
        gpg_homedir=config.gpg_homedir,
        server_cmd=list(config.server_cmd),
        server=config.server,
        # found and checked now (on this builder), not after an hours-long compose
        busybox=_server_busybox(config) if config.server == "busybox" and not base_image
        else None,
        source=source,
        workdir=workdir,
        runner=runner,
        # every file the treefile names must be in the checkout: kojid reads them on
        # the builder host, whose config and certificates must not reach an image
        source_root=source_root,
        # the SCM commit's time: a rebuild of the same source and repos reproduces the
        # image byte for byte (scm_commit_time)
        source_date_epoch=source_date_epoch,
    )


def _server_busybox(config: BuilderConfig) -> Path:
    """The static busybox of the server layer, on this builder host: config ``busybox``,
    else the first of serverlayer.BUSYBOX_PATHS. (The writer checks it is a static ELF for
    the task's arch: a createHostImage task runs on a builder of that arch.)"""
    return find_busybox(config.busybox, "kojid hostimage.conf [hostimage] busybox")


def output_uploads(result: BuildResult, names: UploadNames, what: str) -> list[tuple[Path, str]]:
    """The files a task uploads for import, as (local path, remote name); refused when
    the pipeline built no image (rpm-ostree found nothing to change: no archive)."""
    if not result.changed or result.manifest is None or result.archive is None:
        raise KojiBuildError(
            f"{what}: the compose found nothing to change (commit {result.commit});"
            " no image was built"
        )
    outputs = (
        (result.archive, names.archive),
        (result.manifest_path, names.manifest),
        (result.compose_json_path, names.compose_json),
    )
    return [(Path(path), remote) for path, remote in outputs if path and Path(path).exists()]


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


def result_message(subtask_ids: Sequence[int], build: Mapping[str, Any] | None) -> str:
    """What the parent task returns: where the images are (``build`` None: a scratch
    build, whose files stay in the children's task directories)."""
    if build is None:
        where = ", ".join(
            os.path.join(koji.pathinfo.work(), koji.pathinfo.taskrelpath(task_id))
            for task_id in subtask_ids
        )
        return f"Scratch host image build results in: {where}"
    return f"host image build results in: {koji.pathinfo.imagebuild(build)}"


# --------------------------------------------------------------------------- logs

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The plugin's own logger (kojid's plugins log as koji.plugin.NAME) and the library's.
TASK_LOGGERS = ("koji_hostimage", "koji.plugin.hostimage")


@contextlib.contextmanager
def task_log(path: Path) -> Iterator[Path]:
    """Copy this task's messages (the plugin's and the pipeline's) to ``path`` while the
    block runs, so the task's own log shows its steps and its error."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    for name in TASK_LOGGERS:
        named = logging.getLogger(name)
        named.addHandler(handler)
        if named.getEffectiveLevel() > logging.INFO:
            named.setLevel(logging.INFO)
    try:
        yield path
    finally:
        for name in TASK_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def log_uploads(
    names: UploadNames, task_log_path: Path, pipeline_workdir: Path | None
) -> list[tuple[Path, str]]:
    """The logs a task uploads, as (local path, remote name), whichever exist and are not
    empty: its own log and the buildroot's command log (also after a failure)."""
    candidates = [(task_log_path, names.task_log)]
    if pipeline_workdir is not None:
        candidates.append((pipeline_workdir / "compose.log", names.compose_log))
    return [
        (path, remote)
        for path, remote in candidates
        if path.is_file() and path.stat().st_size > 0
    ]

