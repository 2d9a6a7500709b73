# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole build: treefile -> commit -> export repo -> OCI archive + hostimage.json.

Stages (one log line each), each a small function below:

1. load the treefile (treefile.load_treefile);
2. compose it into the work repo (compose.get_engine(...).compose);
3. verify the commit: ``ostree fsck``, the ``version`` and ``rpmostree.inputhash``
   metadata, the package list from the tree's own rpmdb;
4. export: an archive-mode repo with only the commit, deltas, signatures (export.py);
5. write ``srv/hostimage.json`` (its ``oci`` is null: the archive cannot hold its own
   digest);
6. pack the OCI archive ``<name>-<version>-<release>.<arch>.oci.tar`` (oci.py);
7. write the outer ``<nvr>.<arch>.hostimage.json`` (with ``oci``) and
   ``<nvr>.<arch>.compose.json``.

Every output is first written into a staging directory inside ``output_dir`` and only
renamed into place at the end, all together (every target checked first, renames undone
on failure), the manifest last: an interrupted build leaves nothing half-written there
and can simply run again. Scratch directories are named ``.<kind>-<pid>-<random>``; a
build removes the ones whose process is gone (a killed build's) when it starts.
Scratch trees are discarded off the critical path: renamed to ``.trash-<pid>-<random>``
and deleted in a background thread (fsutil.discard_tree); ``build_host_image`` waits for
that only after the "built ..." line (``BuildRequest.wait_for_cleanup``).

Every stage logs its wall time (``stage NAME: S s``, progress.StageTimer); the outer
hostimage.json records them as ``stage_seconds`` (the archive's copy does not: it must
not vary between builds of the same commit).

An unchanged compose (same input hash, ``--work-repo``) still packages the ref's commit
unless the outputs of exactly that commit are already in ``output_dir``: the input hash
says the commit is unchanged, not that a build of it was ever written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from koji_hostimage.compose.base import ComposeRequest, ComposeResult
from koji_hostimage.compose.engines import get_engine
from koji_hostimage.compose.rpmdb import PKGLIST_KEY, packages_from_pkglist, packages_in_commit
from koji_hostimage.errors import HostImageError, ManifestError
from koji_hostimage.fsutil import (
    clean_stale_scratch,
    discard_tree,
    os_error_line,
    scratch_dir,
    scratch_prefix,
    wait_for_discards,
    write_atomic,
)
from koji_hostimage.image.export import ExportResult, SigningKey, export_commit, open_previous
from koji_hostimage.image.oci_layout import koji_arch_to_oci
from koji_hostimage.manifest import MANIFEST_NAME, HostImageManifest, OciInfo, Package, Source
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.progress import Progress, StageTimer, bytes_in
from koji_hostimage.runner import CommandRunner
from koji_hostimage.treefile.load import Treefile, load_treefile

log = logging.getLogger(__name__)

# The container's Cmd when a base image is given. Configurable (kojid config, --server-cmd):
# any static server that serves /srv/repo on 8080 will do; a base image with Python has this.
DEFAULT_SERVER_CMD = ["python3", "-m", "http.server", "--directory", "/srv/repo", "8080"]

INPUTHASH_KEY = "rpmostree.inputhash"


class BuildError(HostImageError):
    """The build produced something unusable (missing metadata, failed verification)."""


@dataclass
class BuildRequest:
    treefile: Path
    output_dir: Path  # receives <nvr>.<arch>.oci.tar, hostimage.json, compose.json, logs
    arch: str  # Koji arch name (x86_64, aarch64, ppc64le, s390x)
    name: str | None = None  # default: the treefile's file name without suffix
    version: str | None = None  # default: automatic-version-prefix or a date stamp
    release: str = "1"
    engine: str = "auto"
    extra_repos: list[str] = field(default_factory=list)  # baseurls ($arch substituted)
    previous: list[Path] = field(default_factory=list)  # earlier archives/repos: deltas
    # The earlier build (archive or repo) whose commit this one continues from when the
    # work repo does not have the ref yet; default: the first of ``previous``.
    seed: Path | None = None
    delta_from_scratch: bool = False
    base_image: Path | None = None  # OCI archive whose layers go first
    sign_key: str | None = None  # GPG key id; signs commit and summary
    gpg_homedir: Path | None = None
    server_cmd: list[str] = field(default_factory=lambda: list(DEFAULT_SERVER_CMD))
    # Without a base image: "busybox" adds the server layer (a static busybox whose httpd
    # serves /srv/repo; ``busybox`` is its path, default: found on this machine, see
    # image/serverlayer.py); "none" builds an image that cannot serve (an explicit choice).
    server: str = "busybox"
    busybox: Path | None = None
    source: Source = field(default_factory=Source)
    workdir: Path | None = None  # scratch; default: a temporary dir under output_dir
    work_repo: Path | None = None  # bare-user repo kept between builds (cache); optional
    runner: CommandRunner | None = None  # where the compose runs (a buildroot in Koji)
    force_nocache: bool = False
    # Every file the treefile names must resolve inside this directory (default: the
    # treefile's own directory); in Koji it is the SCM checkout.
    source_root: Path | None = None
    # Reproducible builds: the commit's timestamp (and so every date in the archive);
    # the same inputs and epoch give the same commit and archive bytes. None: now.
    source_date_epoch: int | None = None
    # False: return right after "built ...", while scratch trees are still being deleted
    # in the background (the process waits for that when it exits)
    wait_for_cleanup: bool = True


@dataclass
class BuildResult:
    # False: nothing built; the compose found nothing to change and the outputs of that
    # commit were already in output_dir (archive, manifest_path... point at them)
    changed: bool
    manifest: HostImageManifest | None
    archive: Path | None
    manifest_path: Path | None
    compose_json_path: Path | None
    log_path: Path | None
    commit: str | None = None  # the built commit (or, unchanged, the ref's current one)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # every stage, clean-up too


@dataclass
class _Verified:
    """What the verify stage read back from the commit itself."""

    commit: str
    version: str
    inputhash: str
    parent: str | None
    content_checksum: str
    timestamp: int
    packages: list[Package]


def build_host_image(request: BuildRequest) -> BuildResult:
    """Run the whole pipeline for one arch; see the module docstring for the stages."""
    started = time.monotonic()
    # An arch the OCI image cannot name fails now, not after the compose.
    koji_arch_to_oci(request.arch)
    timer = StageTimer()
    try:
        with _os_errors(request.output_dir):
            # absolute paths: tools run with other working directories (rpm --root...)
            output_dir = prepare_output_dir(request.output_dir)
            if request.workdir is not None:
                workdir = Path(request.workdir).absolute()
                workdir.mkdir(parents=True, exist_ok=True)
                clean_stale_scratch(workdir)
                result = _build_in(request, workdir, started, timer)
            else:
                scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix("work"), dir=output_dir))
                try:
                    result = _build_in(request, scratch, started, timer)
                finally:
                    with timer.stage("clean-up"):
                        discard_tree(scratch)  # a rename; deleted in the background
    finally:
        if request.wait_for_cleanup:
            wait_for_discards()
    result.stage_seconds = timer.snapshot()
    return result


def prepare_output_dir(path: Path) -> Path:
    """``path`` made absolute and created, refused (one line) when it cannot take the
    outputs; scratch directories of killed builds in it are removed."""
    output_dir = Path(path).absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise BuildError(f"{output_dir}: output directory: expected a directory, got a file")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(os_error_line(exc, "cannot create the output directory")) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise BuildError(f"{output_dir}: output directory: expected a writable directory"
                         " (read-only file system or no write permission)")
    clean_stale_scratch(output_dir)
    return output_dir


@contextmanager
def _os_errors(output_dir: Path) -> Iterator[None]:
    """A file-system failure (disk full, read-only, a directory in the way) as one
    BuildError line naming the file (else the output directory), not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise BuildError(os_error_line(exc, f"{Path(output_dir).absolute()}: building "
                                                "there (output and scratch)")) from exc
        raise BuildError(os_error_line(exc)) from exc


def _build_in(request: BuildRequest, workdir: Path, started: float, timer: StageTimer
              ) -> BuildResult:
    log_path = workdir / "compose.log"
    with timer.stage("load"):
        treefile = _load(request)
    work_repo = _work_repo_path(request, workdir)
    with timer.stage("seed"):
        _seed_work_repo(request, treefile, work_repo, workdir)
    with timer.stage("compose"):
        compose = _compose(request, treefile, workdir, log_path)
    if not compose.changed:
        if not compose.commit:
            raise BuildError(f"{work_repo}: the compose reported no change but {compose.ref} "
                             "has no commit")
        version = OSTreeRepo(work_repo).show(compose.commit).version
        existing = _existing_outputs(request, compose.commit, version)
        if existing is not None:
            log.info("unchanged: %s stays at %s; its outputs are already in %s", compose.ref,
                     compose.commit, existing.archive.parent if existing.archive else "")
            existing.seconds = time.monotonic() - started
            return existing
        if request.version and version != request.version:
            log.info("unchanged inputs, but %s is version %r, not %r: composing anew",
                     compose.commit[:12], version, request.version)
            with timer.stage("compose"):
                compose = _compose(request, treefile, workdir, log_path, force_nocache=True)
        else:
            log.info("unchanged: %s stays at %s; its outputs are not in %s: packaging it",
                     compose.ref, compose.commit[:12], request.output_dir)
            with open(log_path, "a", encoding="utf-8") as fh:  # the output's compose.log
                fh.write(f"inputs unchanged (input hash of {compose.commit}): no new commit;"
                         f" packaging {compose.ref} at {compose.commit}\n")
    return package_commit(request, compose, work_repo, workdir, log_path, timer=timer,
                          started=started)


def package_commit(request: BuildRequest, compose: ComposeResult, work_repo: Path,
                   workdir: Path | None = None, log_path: Path | None = None,
                   timer: StageTimer | None = None, started: float | None = None
                   ) -> BuildResult:
    """Everything after the compose: verify, export, manifest, archive, outputs.

    Also usable on its own for a commit composed elsewhere (``compose`` says which ref,
    commit and engine); the same commit always packs into the same archive bytes.
    ``timer``: the build's stage timer (default: a new one for these stages);
    ``started``: when the build began (the "built ... in" time), default: now.
    """
    started = time.monotonic() if started is None else started
    timer = timer if timer is not None else StageTimer()
    with _os_errors(request.output_dir):
        output_dir = prepare_output_dir(request.output_dir)
        result = _package_in(request, compose, Path(work_repo).absolute(), output_dir,
                             workdir, log_path, timer)
    result.seconds = time.monotonic() - started
    result.stage_seconds = timer.snapshot()
    log.info("built %s in %.1f s", result.archive, result.seconds)
    return result


def _package_in(request: BuildRequest, compose: ComposeResult, work_repo: Path,
                output_dir: Path, workdir: Path | None, log_path: Path | None,
                timer: StageTimer) -> BuildResult:
    with scratch_dir("package", workdir or output_dir) as scratch:
        with timer.stage("verify"):
            verified = _verify(work_repo, compose, request.version, scratch)
        content_dir = scratch / "content"
        with timer.stage("export"):
            exported = _export(request, work_repo, compose, verified,
                               content_dir / "srv" / "repo", scratch,
                               on_stage=lambda name, secs: timer.take("export", name, secs))
        with timer.stage("manifest"):
            # the archive's copy: no stage_seconds (its bytes must not vary)
            manifest = _manifest(request, compose, verified, exported)
            manifest.write(content_dir / "srv" / MANIFEST_NAME)
        log.info("manifest: %s, %d packages, %d deltas", manifest.nvr, len(manifest.packages),
                 len(manifest.deltas))
        staging = Path(tempfile.mkdtemp(prefix=scratch_prefix("staging"), dir=output_dir))
        try:
            return _write_outputs(request, manifest, compose, content_dir, staging,
                                  log_path, timer)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --- stages ------------------------------------------------------------------------------


def _load(request: BuildRequest) -> Treefile:
    treefile = load_treefile(Path(request.treefile), request.arch, root=request.source_root)
    log.info("treefile %s: ref %s, %d packages", request.treefile, treefile.ref,
             len(treefile.packages))
    return treefile


def _work_repo_path(request: BuildRequest, workdir: Path) -> Path:
    return Path(request.work_repo).absolute() if request.work_repo else workdir / "work-repo"


def _seed_work_repo(request: BuildRequest, treefile: Treefile, work_repo: Path,
                    workdir: Path) -> None:
    """Put the previous build's commit on the ref of an empty work repo.

    rpm-ostree composes on top of the ref's current commit: it is the new commit's
    parent, ``preserve-passwd`` (on by default) keeps its users' and groups' IDs,
    ``check-passwd``/``check-groups: previous`` and ``automatic-version-prefix`` read it,
    and an unchanged input hash is detected against it. A fresh repo (every Koji build)
    would lose all of that; seeding it from the previous build's own archive keeps it.
    """
    seed = request.seed or (request.previous[0] if request.previous else None)
    if seed is None:
        return
    repo = OSTreeRepo(work_repo, request.runner).init("bare-user")
    if repo.rev_parse(treefile.ref, allow_missing=True):
        return  # a kept work repo (--work-repo) already continues its own history
    previous = open_previous(Path(seed), treefile.ref, workdir, arch=request.arch)
    if previous.ref != treefile.ref:
        log.warning("previous build %s has ref %s, not %s: not continuing from it", seed,
                    previous.ref, treefile.ref)
        return
    repo.pull_local(previous.repo, [previous.ref])
    log.info("work repo continues from %s (%s, from %s)", previous.commit[:12], previous.ref,
             Path(seed).name)


def _compose_version(request: BuildRequest, treefile: Treefile) -> str | None:
    """The version to stamp: the requested one; else the engine applies
    ``automatic-version-prefix``; else a UTC date stamp, so every commit has a version."""
    if request.version:
        return request.version
    if treefile.data.get("automatic-version-prefix"):
        return None
    return time.strftime("%Y%m%d.%H%M%S", time.gmtime())


def _compose(request: BuildRequest, treefile: Treefile, workdir: Path, log_path: Path,
             force_nocache: bool = False) -> ComposeResult:
    engine = get_engine(request.engine, request.runner)
    compose_request = ComposeRequest(
        treefile=treefile,
        repo=_work_repo_path(request, workdir),
        workdir=workdir / "compose",
        version=_compose_version(request, treefile),
        extra_repos=[url.replace("$arch", request.arch) for url in request.extra_repos],
        force_nocache=request.force_nocache or force_nocache,
        log_path=log_path,
        source_date_epoch=request.source_date_epoch,
    )
    result = engine.compose(compose_request)
    log.info("compose (%s): %s %s", result.engine, "new commit" if result.changed else
             "unchanged", result.commit)
    return result


def _verify(work_repo: Path, compose: ComposeResult, requested_version: str | None,
            workdir: Path) -> _Verified:
    # No `ostree fsck` of the work repo here: kept between builds, it holds every earlier
    # commit, and fsck takes no commit to limit itself to. The export stage fscks the
    # export repo, which holds exactly this commit's objects (pulled from the work repo,
    # so a corrupted object there is caught): the check grows with this build only.
    repo = OSTreeRepo(work_repo)
    if not compose.commit:
        raise BuildError(f"{work_repo}: the compose reported a change but no commit")
    info = repo.show(compose.commit)
    version = info.version
    if not version:
        raise BuildError(f"{work_repo}: commit {compose.commit}: metadata version: "
                         "expected a string, got nothing")
    if requested_version and version != requested_version:
        raise BuildError(f"{work_repo}: commit {compose.commit}: metadata version: expected "
                         f"{requested_version!r}, got {version!r}")
    inputhash = info.metadata.get(INPUTHASH_KEY)
    if not isinstance(inputhash, str) or not inputhash:
        raise BuildError(f"{work_repo}: commit {compose.commit}: metadata {INPUTHASH_KEY}: "
                         f"expected a string, got {inputhash!r}")
    packages = _packages(work_repo, compose.commit, info.metadata, workdir)
    log.info("verified %s: version %s, %d packages (its objects are checked at export)",
             compose.commit[:12], version, len(packages))
    return _Verified(compose.commit, version, inputhash, info.parent,
                     info.content_checksum, info.timestamp, packages)


def _packages(work_repo: Path, commit: str, metadata: dict[str, object], workdir: Path
              ) -> list[Package]:
    """The tree's own rpmdb is the truth; a commit without one (not a real compose) may
    still carry rpm-ostree's ``rpmostree.rpmdb.pkglist`` metadata."""
    try:
        return sorted(packages_in_commit(work_repo, commit, workdir=workdir))
    except HostImageError as exc:
        pkglist = metadata.get(PKGLIST_KEY)
        if pkglist is None:
            raise BuildError(f"{work_repo}: commit {commit}: no package list: the tree has "
                             f"no readable rpmdb ({exc}) and no rpmostree.rpmdb.pkglist") from exc
        log.warning("commit %s: no readable rpmdb (%s); using rpmostree.rpmdb.pkglist",
                    commit[:12], exc)
        return sorted(packages_from_pkglist(pkglist, f"{commit}: {PKGLIST_KEY}"))


def _export(request: BuildRequest, work_repo: Path, compose: ComposeResult,
            verified: _Verified, dest: Path, workdir: Path,
            on_stage: Callable[[str, float], None] | None = None) -> ExportResult:
    signing = SigningKey(request.sign_key, request.gpg_homedir) if request.sign_key else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = export_commit(
        work_repo, compose.ref, verified.commit, dest,
        previous=[Path(p) for p in request.previous], arch=request.arch,
        delta_from_scratch=request.delta_from_scratch,
        signing=signing,
        scratch_dir=workdir,
        timestamp=verified.timestamp,
        on_stage=on_stage,
    )
    log.info("exported %s: %d objects, %d deltas%s", compose.ref, result.object_count,
             len(result.deltas), ", signed" if result.signed else "")
    return result


def _manifest(request: BuildRequest, compose: ComposeResult, verified: _Verified,
              exported: ExportResult) -> HostImageManifest:
    treefile_path = Path(request.treefile)
    source = request.source
    if source.treefile is None:
        source = Source(source.scm_url, source.revision, treefile_path.name)
    return HostImageManifest(
        name=request.name or treefile_path.stem,
        version=verified.version,
        release=request.release,
        arch=request.arch,
        ref=compose.ref,
        commit=verified.commit,
        parent=verified.parent,
        content_checksum=verified.content_checksum,
        timestamp=verified.timestamp,
        inputhash=verified.inputhash,
        engine=compose.engine,
        packages=verified.packages,
        object_count=exported.object_count,
        object_bytes=exported.object_bytes,
        deltas=exported.deltas,
        source=source,
        source_date_epoch=request.source_date_epoch,
    )


def _write_outputs(request: BuildRequest, manifest: HostImageManifest,
                   compose: ComposeResult, content_dir: Path, staging: Path,
                   log_path: Path | None, timer: StageTimer) -> BuildResult:
    from koji_hostimage.image.oci_layout import image_labels, image_ref_name
    from koji_hostimage.image.oci_writer import OciImageSpec, write_oci_archive

    output_dir = Path(request.output_dir)
    stem = f"{manifest.nvr}.{manifest.arch}"
    labels = image_labels(manifest.commit, manifest.version, manifest.ref,
                          manifest.timestamp, manifest.source.scm_url,
                          manifest.source.revision)
    spec = OciImageSpec(
        koji_arch=request.arch,
        created=manifest.timestamp,
        labels=labels,
        ref_name=image_ref_name(manifest.name, manifest.version, manifest.release),
        cmd=list(request.server_cmd) if request.base_image else None,
        base_image=Path(request.base_image) if request.base_image else None,
        server_busybox=_server_busybox(request),
    )
    with timer.stage("pack"), Progress("packed", "bytes").watch(lambda: bytes_in(staging)):
        written = write_oci_archive(staging / manifest.archive_name, content_dir, spec)
    log.info("archive %s: %d bytes, manifest %s", manifest.archive_name, written.size,
             written.manifest_digest)
    manifest.oci = OciInfo(
        archive=manifest.archive_name,
        archive_size=written.size,
        manifest_digest=written.manifest_digest,
        config_digest=written.config_digest,
        content_layer_digest=written.content_layer_digest,
    )
    # every stage so far; publish and clean-up come after this file is written
    manifest.stage_seconds = timer.snapshot()
    manifest.write(staging / f"{stem}.{MANIFEST_NAME}")
    write_atomic(staging / f"{stem}.compose.json", _compose_json_bytes(compose))
    if log_path is not None and log_path.exists():
        shutil.copyfile(log_path, staging / f"{stem}.compose.log")
    # publish: archive first, manifest last (its presence means the build is complete)
    names = [manifest.archive_name, f"{stem}.compose.json", f"{stem}.compose.log",
             f"{stem}.{MANIFEST_NAME}"]
    with timer.stage("publish"):
        _publish(staging, output_dir, names)
    log.info("outputs in %s: %s", output_dir, ", ".join(names))
    compose_log = output_dir / f"{stem}.compose.log"
    return BuildResult(
        changed=True,
        manifest=manifest,
        archive=output_dir / manifest.archive_name,
        manifest_path=output_dir / f"{stem}.{MANIFEST_NAME}",
        compose_json_path=output_dir / f"{stem}.compose.json",
        log_path=compose_log if compose_log.exists() else None,
        commit=manifest.commit,
    )


def _server_busybox(request: BuildRequest) -> Path | None:
    """The busybox of the server layer; None with a base image (its own server runs
    server_cmd) or with server "none" (asked for: an image that cannot serve)."""
    from koji_hostimage.image.serverlayer import find_busybox

    if request.server not in ("busybox", "none"):
        raise BuildError(f"server: expected 'busybox' or 'none', got {request.server!r}")
    if request.base_image or request.server == "none":
        return None
    return find_busybox(request.busybox)


def _compose_json_bytes(compose: ComposeResult) -> bytes:
    if compose.compose_json_path and Path(compose.compose_json_path).is_file():
        return Path(compose.compose_json_path).read_bytes()
    return (json.dumps(compose.compose_json, indent=2, sort_keys=True) + "\n").encode()


def _publish(staging: Path, output_dir: Path, names: list[str]) -> None:
    """Rename the staged ``names`` into ``output_dir`` in order: all of them or none.

    Every target is checked before anything moves (a directory at an output's name is
    refused, naming it); if a rename still fails, the ones already made are undone and
    the files they replaced put back.
    """
    present = [name for name in names if (staging / name).exists()]
    for name in present:
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            raise BuildError(f"{target}: expected a file or nothing at this output's name, "
                             "got a directory; nothing was written")
    backup = staging / ".replaced"
    backup.mkdir()
    moved: list[str] = []
    try:
        for name in present:
            target = output_dir / name
            if target.is_file() and not target.is_symlink():
                try:
                    os.link(target, backup / name)
                except OSError:
                    shutil.copy2(target, backup / name)
            os.replace(staging / name, target)
            moved.append(name)
    except BaseException:
        for name in reversed(moved):
            target = output_dir / name
            if (backup / name).exists():
                os.replace(backup / name, target)
            else:
                target.unlink(missing_ok=True)
        raise


def _existing_outputs(request: BuildRequest, commit: str, version: str | None
                      ) -> BuildResult | None:
    """The outputs of exactly ``commit`` (whose metadata version is ``version``) when they
    are all in the output directory (the manifest naming that commit, the archive of its
    size), else None."""
    if not version or (request.version and version != request.version):
        return None
    output_dir = Path(request.output_dir).absolute()
    name = request.name or Path(request.treefile).stem
    stem = f"{name}-{version}-{request.release}.{request.arch}"
    manifest_path = output_dir / f"{stem}.{MANIFEST_NAME}"
    try:
        manifest = HostImageManifest.load(manifest_path)
    except ManifestError:
        return None
    archive = output_dir / manifest.archive_name
    if (manifest.commit != commit or manifest.oci is None
            or not archive.is_file() or archive.stat().st_size != manifest.oci.archive_size):
        return None
    compose_json = output_dir / f"{stem}.compose.json"
    compose_log = output_dir / f"{stem}.compose.log"
    return BuildResult(False, manifest, archive, manifest_path,
                       compose_json if compose_json.is_file() else None,
                       compose_log if compose_log.is_file() else None, commit=commit)
