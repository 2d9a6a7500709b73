# SPDX-License-Identifier: GPL-2.0-or-later
"""The pungi ``hostimage`` phase: host images built in Koji, recorded in the compose.

Written as it would live upstream as ``pungi/phases/hostimage.py`` (pungi 4.3+), so it
imports from ``pungi`` and follows the osbuild and kiwibuild phases. Until it is merged,
``koji_hostimage.pungi.entry`` registers it into an unmodified pungi installation.

One config block becomes one ``hostImageBuild`` Koji task covering all its arches (the
builder plugin runs one ``createHostImage`` child per arch and lets the ``failable_arches``
children fail without failing the task). The worker watches the task, links every
archive of the resulting build into the variant's image directory and adds one productmd
``Image`` per ``.oci.tar`` to ``compose.im``; the image_checksum phase fills in the
checksums before images.json is written.

Real pungi interfaces this relies on (read in pungi 4.3's source):
- ``pungi.phases.base``: ``PhaseBase.validate`` (a no-op that phases override; pungi-koji
  calls it on every phase after reading the variants and before running any),
  ``ConfigGuardedPhase`` (``skip``, ``get_config_block`` -> ``util.get_variant_data``),
  ``ImageConfigMixin`` (``get_config``: the block's key, else ``hostimage_<key>``, else
  ``global_<key>``, which is how phase-wide defaults such as ``hostimage_target`` and
  ``hostimage_use_buildroot_repo`` work; ``get_version`` and ``get_release``, both through
  ``util.version_generator``), ``PhaseLoggerMixin``.
- ``pungi.util``: ``failable``, ``get_repo_urls`` (variant uid -> the compose's repo
  path, through ``translate_path``), ``makedirs``, ``get_mtime``, ``get_file_size``.
- ``pungi.wrappers.kojiwrapper.KojiWrapper``: ``login``, ``koji_proxy``,
  ``koji_module.pathinfo``, ``save_task_id`` (what ``pungi-koji`` reads to cancel the
  compose's Koji tasks when it is killed) and ``watch_task``.
- ``pungi.linker.Linker.link`` with ``compose.conf["link_type"]``;
  ``compose.paths.compose.image_dir``; ``compose.im`` (``productmd.images.Images``).
- Koji hub calls: ``hostImageBuild`` (this project's hub plugin), ``getTaskResult``,
  ``listBuilds(taskID=...)``, ``getBuild``, ``listArchives(buildID=..., type="image")``,
  ``getTaskChildren`` and ``koji.PathInfo.imagebuild`` / ``work`` / ``taskrelpath``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from kobo import shortcuts
from kobo.threads import ThreadPool, WorkerThread
from productmd.images import Image
from pungi import util
from pungi.linker import Linker
from pungi.phases import base
from pungi.wrappers import kojiwrapper

DELIVERABLE = "hostimage"
ARCHIVE_SUFFIX = ".oci.tar"
# The build manifest beside each archive; other build files (compose.json) stay in Koji.
MANIFEST_SUFFIX = ".hostimage.json"
# productmd knows "ociarchive" both as an image type and as a format.
IMAGE_TYPE = "ociarchive"
IMAGE_FORMAT = "ociarchive"
# The per-arch child task of hostImageBuild (builder plugin).
CHILD_METHOD = "createHostImage"
# Keys of a config block passed to the hub unchanged, under the same name, in ``opts``.
PASSTHROUGH_OPTS = (
    "name",
    "scratch",
    "skip_tag",
    "base_image",
    "delta_from",
    "engine",
    "sign_key",
)
# <name>-<version>-<release>.<arch>.oci.tar: the arch when Koji does not say it.
_ARCH_FROM_FILENAME = re.compile(r"\.([A-Za-z0-9_]+)\.oci\.tar$")


@dataclass
class HostImageRequest:
    """Everything one worker needs to start, watch and collect one hostImageBuild task."""

    target: str
    scm_url: str
    treefile: str
    opts: dict[str, Any]
    arches: list[str]
    failable_arches: list[str] = field(default_factory=list)
    subvariant: str = ""

    @property
    def scratch(self) -> bool:
        return bool(self.opts.get("scratch"))


@dataclass
class BuiltFile:
    """One file of a finished build, where Koji keeps it."""

    arch: str
    path: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    @property
    def is_image(self) -> bool:
        return self.filename.endswith(ARCHIVE_SUFFIX)

    @property
    def is_manifest(self) -> bool:
        return self.filename.endswith(MANIFEST_SUFFIX)


class HostImagePhase(base.PhaseLoggerMixin, base.ImageConfigMixin, base.ConfigGuardedPhase):
    """Schedule one hostImageBuild task per config block and variant."""

    name = "hostimage"

    def __init__(self, compose: Any) -> None:
        super().__init__(compose)
        self.pool = ThreadPool(logger=self.logger)

    def validate(self) -> None:
        """Check what the schema cannot, before any phase runs.

        pungi-koji (``run_compose``) reads the variants, then calls ``validate()`` on
        every phase it is going to run, and only then starts the first one; a
        ``ValueError`` here stops the compose with "Configuration is not valid". So the
        blocks are checked against the variants they will build for: every block
        resolves a Koji target, its ``failable`` arches are among its ``arches``, and
        every repo it hands the builders is a URL (``translate_paths``), also for blocks
        whose failure would not fail the compose.
        """
        errors = []
        try:
            super().validate()
        except ValueError as exc:
            errors = str(exc).splitlines()
        for pattern, blocks in sorted(self.compose.conf.get(self.name, {}).items()):
            for index, block in enumerate(shortcuts.force_list(blocks)):
                where = self._where(pattern, index)
                if not self.get_config(block, "target"):
                    errors.append(
                        f"{where}: no Koji target: set 'target' in the block, or"
                        " 'hostimage_target' or 'global_target'"
                    )
                unknown = _unknown_failable(block)
                if unknown:
                    errors.append(
                        f"{where}: 'failable' names arches not in 'arches'"
                        f" ({', '.join(block['arches'])}): {', '.join(unknown)}"
                    )
        errors.extend(self._repo_errors())
        if errors:
            raise ValueError("\n".join(errors))

    def _where(self, pattern: str, index: int) -> str:
        """A block as the config file spells it, after the file's name when known."""
        where = f"{self.name}[{pattern!r}][{index}]"
        files = getattr(self.compose.conf, "opened_files", None)
        return f"{files[0]}: {where}" if files else where

    def _repo_errors(self) -> list[str]:
        """The blocks ``run()`` will start whose repos are not all URLs.

        Only those blocks need ``translate_paths``: a variant uid (named in ``repo``, or
        the variant's own repo, added unless the variant is empty) or an absolute path
        is a directory of this compose, which Koji builders can only fetch by URL.
        """
        errors = []
        for variant in self.compose.get_variants():
            arches = {arch for arch in variant.arches if arch != "src"}
            for pattern, blocks in sorted(self.compose.conf.get(self.name, {}).items()):
                # pungi's own matching of a variant uid regex, one pattern at a time.
                matched = util.get_variant_data({self.name: {pattern: blocks}}, self.name, variant)
                for index, block in enumerate(matched):
                    if not self._get_arches(block, arches):
                        continue  # run() skips it: no arch in common
                    where = f"{self._where(pattern, index)}: variant {variant.uid}"
                    try:
                        urls = self._get_repo_urls(block, variant)
                    except RuntimeError as exc:  # util.get_repo_url: no such variant
                        errors.append(f"{where}: 'repo': {exc}")
                        continue
                    local = [url for url in urls if "://" not in url]
                    if local:
                        errors.append(f"{where}: {_local_repo_message(self.compose, local)}")
        return errors

    def run(self) -> None:
        for variant in self.compose.get_variants():
            arches = {arch for arch in variant.arches if arch != "src"}
            for image_conf in self.get_config_block(variant):
                build_arches = self._get_arches(image_conf, arches)
                if not build_arches:
                    self.compose.log_debug(
                        f"[{self.name.upper()}] skip {variant.uid}: no arches in common"
                    )
                    continue
                request = self._make_request(variant, image_conf, build_arches)
                self.pool.add(HostImageThread(self.pool))
                self.pool.queue_put((self.compose, variant, request))
        self.pool.start()

    def _get_arches(self, image_conf: dict[str, Any], arches: set[str]) -> list[str]:
        """The variant's arches, narrowed to the block's ``arches`` when it lists any."""
        if "arches" in image_conf:
            arches = set(image_conf["arches"]) & arches
        return sorted(arches)

    def _get_failable(self, image_conf: dict[str, Any], build_arches: list[str]) -> list[str]:
        failable = image_conf.get("failable", [])
        if failable == ["*"]:
            return list(build_arches)
        return sorted(set(failable) & set(build_arches))

    def _get_repo_urls(self, image_conf: dict[str, Any], variant: Any) -> list[str]:
        """The block's repos, then the variant's own (unless listed already or the
        variant is empty), as in the osbuild and kiwibuild phases. Variant uids become
        the compose's repo paths, translated with ``translate_paths`` (``$arch`` left
        for the builder to substitute per arch)."""
        repos = list(shortcuts.force_list(image_conf.get("repo", [])))
        if not variant.is_empty and variant.uid not in repos:
            repos.append(variant.uid)
        return util.get_repo_urls(self.compose, repos, arch="$arch")

    def _get_repo(self, image_conf: dict[str, Any], variant: Any) -> list[str]:
        """Repo URLs for the builder: ``validate()`` refused local paths already; this
        is the same check for callers that run the phase without validating it."""
        urls = self._get_repo_urls(image_conf, variant)
        local = [url for url in urls if "://" not in url]
        if local:
            raise RuntimeError(
                f"{self.name}: variant {variant.uid}: {_local_repo_message(self.compose, local)}"
            )
        return urls

    def _make_request(
        self, variant: Any, image_conf: dict[str, Any], build_arches: list[str]
    ) -> HostImageRequest:
        failable = self._get_failable(image_conf, build_arches)
        opts: dict[str, Any] = {"arches": build_arches}
        if failable:
            opts["failable_arches"] = failable
        version = self.get_version(image_conf)
        if version:
            opts["version"] = version
        release = self.get_release(image_conf)
        if release:
            opts["release"] = release
        # Only the compose's repos: the builder uses them instead of the build tag's
        # repo, unless use_buildroot_repo (block, else hostimage_use_buildroot_repo,
        # else false) asks it to read that one too.
        repo = self._get_repo(image_conf, variant)
        if repo:
            opts["repo"] = repo
        if self.get_config(image_conf, "use_buildroot_repo"):
            opts["use_buildroot_repo"] = True
        for key in PASSTHROUGH_OPTS:
            if key in image_conf:
                opts[key] = image_conf[key]
        return HostImageRequest(
            target=self.get_config(image_conf, "target"),
            scm_url=image_conf["scm_url"],
            treefile=image_conf["treefile"],
            opts=opts,
            arches=build_arches,
            failable_arches=failable,
            subvariant=image_conf.get("subvariant", variant.uid),
        )


class HostImageThread(WorkerThread):
    def process(self, item: tuple[Any, Any, HostImageRequest], num: int) -> None:
        compose, variant, request = item
        self.num = num
        # The builder fails the task only when an arch that may not fail fails, so the
        # task as a whole may fail only when every one of its arches may.
        can_task_fail = set(request.failable_arches).issuperset(request.arches)
        with util.failable(
            compose,
            can_task_fail,
            variant,
            "*",
            DELIVERABLE,
            subvariant=request.subvariant,
            logger=self.pool._logger,
        ):
            self.worker(compose, variant, request)

    def worker(self, compose: Any, variant: Any, request: HostImageRequest) -> None:
        msg = f"hostimage task for variant {variant.uid}"
        self.pool.log_info(f"[BEGIN] {msg}")
        koji = kojiwrapper.KojiWrapper(compose)
        koji.login()

        task_id = koji.koji_proxy.hostImageBuild(
            request.target, request.scm_url, request.treefile, opts=request.opts
        )
        # Recorded before waiting: a killed pungi-koji cancels the tasks listed there.
        koji.save_task_id(task_id)

        log_dir = os.path.join(compose.paths.log.topdir(), DELIVERABLE)
        util.makedirs(log_dir)
        log_file = os.path.join(log_dir, f"{variant.uid}-{self.num}-watch-task.log")
        if koji.watch_task(task_id, log_file) != 0:
            raise RuntimeError(
                f"hostImageBuild: task {task_id} failed: see {log_file} for details"
            )

        # Watching runs in a subprocess, so this session may have timed out meanwhile.
        koji = kojiwrapper.KojiWrapper(compose)
        if request.scratch:
            files = find_scratch_files(koji, task_id)
        else:
            files = find_build_files(koji, task_id)

        built_arches = self._link_files(compose, variant, request, koji, files)
        for arch in request.arches:
            if arch in built_arches:
                continue
            # Only a failable arch can go missing from a successful task; failable()
            # logs it as failed and goes on, or raises for any other arch.
            with util.failable(
                compose,
                arch in request.failable_arches,
                variant,
                arch,
                DELIVERABLE,
                subvariant=request.subvariant,
                logger=self.pool._logger,
            ):
                raise RuntimeError(
                    f"hostImageBuild: task {task_id} produced no image for arch {arch}"
                )

        self.pool.log_info(f"[DONE ] {msg} (task id: {task_id})")

    def _link_files(
        self,
        compose: Any,
        variant: Any,
        request: HostImageRequest,
        koji: Any,
        files: list[BuiltFile],
    ) -> set[str]:
        """Link every file into the image dir; add the images to compose.im.

        Returns the arches that got an image. The build manifests (hostimage.json)
        travel beside the archives but are not images, so they are only linked; the
        build's other files (compose.json, logs) stay in Koji.
        """
        linker = Linker(logger=self.pool._logger)
        built_arches = set()
        for built in files:
            if built.arch not in request.arches or not (built.is_image or built.is_manifest):
                continue
            image_dir = compose.paths.compose.image_dir(variant) % {"arch": built.arch}
            rel_image_dir = compose.paths.compose.image_dir(variant, relative=True) % {
                "arch": built.arch
            }
            util.makedirs(image_dir)
            image_dest = os.path.join(image_dir, built.filename)
            source = _local_path(compose, built.path)
            linker.link(source, image_dest, link_type=compose.conf["link_type"])
            if not built.is_image:
                continue
            add_image(
                compose,
                variant,
                built.arch,
                image_dest,
                os.path.join(rel_image_dir, built.filename),
                subvariant=request.subvariant,
                can_fail=built.arch in request.failable_arches,
            )
            built_arches.add(built.arch)
        return built_arches


def add_image(
    compose: Any,
    variant: Any,
    arch: str,
    image_dest: str,
    rel_path: str,
    subvariant: str,
    can_fail: bool,
) -> Image:
    """Describe one linked OCI archive in ``compose.im``; checksums come later."""
    img = Image(compose.im)
    img.type = IMAGE_TYPE
    img.format = IMAGE_FORMAT
    img.path = rel_path
    img.mtime = util.get_mtime(image_dest)
    img.size = util.get_file_size(image_dest)
    img.arch = arch
    img.disc_number = 1
    img.disc_count = 1
    img.bootable = False
    img.implant_md5 = None
    img.subvariant = subvariant
    # Not productmd fields: pungi's own bookkeeping, as every image phase sets them.
    img.can_fail = can_fail
    img.deliverable = DELIVERABLE
    compose.im.add(variant=variant.uid, arch=arch, image=img)
    return img


def find_build_files(koji: Any, task_id: int) -> list[BuiltFile]:
    """The files of the build a finished hostImageBuild task imported."""
    build_id = _task_build_id(koji, task_id)
    build_info = koji.koji_proxy.getBuild(build_id)
    topdir = koji.koji_module.pathinfo.imagebuild(build_info)
    files = []
    for archive in koji.koji_proxy.listArchives(buildID=build_id, type="image"):
        arch = _archive_arch(archive)
        if not arch:
            raise RuntimeError(
                f"hostImageBuild: task {task_id}: archive {archive['filename']}"
                f" of build {build_id} names no arch"
            )
        files.append(BuiltFile(arch, os.path.join(topdir, archive["filename"])))
    return files


def find_scratch_files(koji: Any, task_id: int) -> list[BuiltFile]:
    """A scratch build imports nothing: its files stay in each child task's work dir."""
    pathinfo = koji.koji_module.pathinfo
    closed = koji.koji_module.TASK_STATES["CLOSED"]
    files = []
    for child in koji.koji_proxy.getTaskChildren(task_id, request=True):
        if child["method"] != CHILD_METHOD or child["state"] != closed:
            continue  # a failed child is a failable arch: reported as missing later
        result = koji.koji_proxy.getTaskResult(child["id"])
        topdir = os.path.join(pathinfo.work(), pathinfo.taskrelpath(child["id"]))
        for filename in result.get("files", []):
            files.append(BuiltFile(result["arch"], os.path.join(topdir, filename)))
    return files


def _task_build_id(koji: Any, task_id: int) -> int:
    """The build the task imported: hostImageBuild's result is only a message (the builder
    plugin's HostImageBuildTask), so the build is found by its task."""
    builds = koji.koji_proxy.listBuilds(taskID=task_id)
    if not builds:
        raise RuntimeError(f"hostImageBuild: task {task_id} finished without a build")
    return builds[0]["build_id"]


def _archive_arch(archive: dict[str, Any]) -> str | None:
    """Image archives carry their arch (listArchives type="image"); else the name does."""
    extra = archive.get("extra") or {}
    arch = (
        archive.get("arch")
        or extra.get("image", {}).get("arch")
        or extra.get("typeinfo", {}).get("image", {}).get("arch")
    )
    if arch:
        return arch
    match = _ARCH_FROM_FILENAME.search(archive["filename"])
    return match.group(1) if match else None


def _local_path(compose: Any, path: str) -> str:
    """Newer pungi fetches Koji files it cannot see through compose.koji_downloader."""
    downloader = getattr(compose, "koji_downloader", None)
    return downloader.get_file(path) if downloader else path


def _local_repo_message(compose: Any, local: list[str]) -> str:
    """Why local repo paths are refused, and the 'translate_paths' entry that fixes it."""
    prefix = os.path.dirname(compose.topdir.rstrip("/")) or compose.topdir
    return (
        f"repo {', '.join(local)} is a local path, which Koji builders cannot read:"
        " 'translate_paths' maps no prefix of it to a URL; expected a (path prefix, URL)"
        f" pair there, e.g. translate_paths = [({prefix!r}, 'https://<server>/<path>')]"
    )


def _unknown_failable(block: dict[str, Any]) -> list[str]:
    failable = block.get("failable", [])
    if "arches" not in block or failable == ["*"]:
        return []
    return sorted(set(failable) - set(block["arches"]))
