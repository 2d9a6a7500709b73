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
renamed into place at the end, the manifest last: an interrupted build leaves nothing
half-written there and can simply run again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from koji_hostimage.compose.base import ComposeRequest, ComposeResult
from koji_hostimage.compose.engines import get_engine
from koji_hostimage.compose.rpmdb import PKGLIST_KEY, packages_from_pkglist, packages_in_commit
from koji_hostimage.errors import HostImageError
from koji_hostimage.fsutil import write_atomic
from koji_hostimage.image.export import ExportResult, SigningKey, export_commit, open_previous
from koji_hostimage.manifest import MANIFEST_NAME, HostImageManifest, OciInfo, Package, Source
from koji_hostimage.ostree.repo import OSTreeRepo
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
    source: Source = field(default_factory=Source)
    workdir: Path | None = None  # scratch; default: a temporary dir under output_dir
    work_repo: Path | None = None  # bare-user repo kept between builds (cache); optional
    runner: CommandRunner | None = None  # where the compose runs (a buildroot in Koji)
    force_nocache: bool = False
    # Every file the treefile names must resolve inside this directory (default: the
    # treefile's own directory); in Koji it is the SCM checkout.
    source_root: Path | None = None


@dataclass
class BuildResult:
    changed: bool  # False: the compose found nothing to change; no archive written
    manifest: HostImageManifest | None
    archive: Path | None
    manifest_path: Path | None
    compose_json_path: Path | None
    log_path: Path | None
    commit: str | None = None  # the built commit (or, unchanged, the ref's current one)
    seconds: float = 0.0


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
    # absolute paths: tools run with other working directories (rpm --root, a buildroot)
    output_dir = Path(request.output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    if request.workdir is not None:
        workdir = Path(request.workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        return _build_in(request, workdir, started)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=output_dir) as scratch:
        return _build_in(request, Path(scratch), started)


def _build_in(request: BuildRequest, workdir: Path, started: float) -> BuildResult:
    log_path = workdir / "compose.log"
    treefile = _load(request)
    _seed_work_repo(request, treefile, _work_repo_path(request, workdir), workdir)
    compose = _compose(request, treefile, workdir, log_path)
    if not compose.changed:
        log.info("unchanged: %s stays at %s; no archive written", compose.ref, compose.commit)
        return BuildResult(False, None, None, None, None, log_path, commit=compose.commit,
                           seconds=time.monotonic() - started)
    result = package_commit(request, compose, _work_repo_path(request, workdir), workdir,
                            log_path)
    result.seconds = time.monotonic() - started
    return result


def package_commit(request: BuildRequest, compose: ComposeResult, work_repo: Path,
                   workdir: Path | None = None, log_path: Path | None = None) -> BuildResult:
    """Everything after the compose: verify, export, manifest, archive, outputs.

    Also usable on its own for a commit composed elsewhere (``compose`` says which ref,
    commit and engine); the same commit always packs into the same archive bytes.
    """
    started = time.monotonic()
    output_dir = Path(request.output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    work_repo = Path(work_repo).absolute()
    with tempfile.TemporaryDirectory(prefix=".package-", dir=workdir or output_dir
                                     ) as scratch_name:
        scratch = Path(scratch_name)
        verified = _verify(work_repo, compose, request.version, scratch)
        content_dir = scratch / "content"
        exported = _export(request, work_repo, compose, verified,
                           content_dir / "srv" / "repo", scratch)
        manifest = _manifest(request, compose, verified, exported)
        manifest.write(content_dir / "srv" / MANIFEST_NAME)
        log.info("manifest: %s, %d packages, %d deltas", manifest.nvr, len(manifest.packages),
                 len(manifest.deltas))
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=request.output_dir))
        try:
            result = _write_outputs(request, manifest, compose, content_dir, staging,
                                    log_path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - started
    log.info("built %s in %.1f s", result.archive, result.seconds)
    return result


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
    previous = open_previous(Path(seed), treefile.ref, workdir)
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


def _compose(request: BuildRequest, treefile: Treefile, workdir: Path, log_path: Path
             ) -> ComposeResult:
    engine = get_engine(request.engine, request.runner)
    compose_request = ComposeRequest(
        treefile=treefile,
        repo=_work_repo_path(request, workdir),
        workdir=workdir / "compose",
        version=_compose_version(request, treefile),
        extra_repos=[url.replace("$arch", request.arch) for url in request.extra_repos],
        force_nocache=request.force_nocache,
        log_path=log_path,
    )
    result = engine.compose(compose_request)
    log.info("compose (%s): %s %s", result.engine, "new commit" if result.changed else
             "unchanged", result.commit)
    return result


def _verify(work_repo: Path, compose: ComposeResult, requested_version: str | None,
            workdir: Path) -> _Verified:
    repo = OSTreeRepo(work_repo)
    repo.fsck(quiet=True)
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
    log.info("verified %s: version %s, %d packages, fsck clean", compose.commit[:12], version,
             len(packages))
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
            verified: _Verified, dest: Path, workdir: Path) -> ExportResult:
    signing = SigningKey(request.sign_key, request.gpg_homedir) if request.sign_key else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = export_commit(
        work_repo, compose.ref, verified.commit, dest,
        previous=[Path(p) for p in request.previous],
        delta_from_scratch=request.delta_from_scratch,
        signing=signing,
        scratch_dir=workdir,
        timestamp=verified.timestamp,
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
    )


def _write_outputs(request: BuildRequest, manifest: HostImageManifest,
                   compose: ComposeResult, content_dir: Path, staging: Path,
                   log_path: Path | None) -> BuildResult:
    from koji_hostimage.image.oci_layout import image_labels
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
        ref_name=manifest.version,
        cmd=list(request.server_cmd) if request.base_image else None,
        base_image=Path(request.base_image) if request.base_image else None,
    )
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
    manifest.write(staging / f"{stem}.{MANIFEST_NAME}")
    write_atomic(staging / f"{stem}.compose.json", _compose_json_bytes(compose))
    if log_path is not None and log_path.exists():
        shutil.copyfile(log_path, staging / f"{stem}.compose.log")
    # publish: archive first, manifest last (its presence means the build is complete)
    names = [manifest.archive_name, f"{stem}.compose.json", f"{stem}.compose.log",
             f"{stem}.{MANIFEST_NAME}"]
    for name in names:
        if (staging / name).exists():
            os.replace(staging / name, output_dir / name)
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


def _compose_json_bytes(compose: ComposeResult) -> bytes:
    if compose.compose_json_path and Path(compose.compose_json_path).is_file():
        return Path(compose.compose_json_path).read_bytes()
    return (json.dumps(compose.compose_json, indent=2, sort_keys=True) + "\n").encode()
