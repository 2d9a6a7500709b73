# SPDX-License-Identifier: GPL-2.0-or-later
"""kojid plugin: the ``hostImageBuild`` and ``createHostImage`` tasks (DESIGN section 7).

Install as /usr/lib/koji-builder-plugins/hostimage.py, add ``hostimage`` to ``plugins`` in
kojid.conf; settings come from /etc/kojid/plugins/hostimage.conf
(conf/kojid/hostimage.conf documents every option).

The tasks follow kojid's own image tasks (koji-project/koji builder/kojid
``BuildBaseImageTask``/``BuildLiveMediaTask`` and plugins/builder/kiwi.py
``KiwiBuildTask``/``KiwiCreateImageTask``) and use these real interfaces:

- kojid: ``BuildRoot(session, options, tag, arch, task_id, repo_id=..., install_group=...,
  setup_dns=..., bind_opts=...)``, ``.init()``, ``.mock(args)``, ``.rootdir()``,
  ``.tmpdir(within=False)``, ``.markExternalRPMs(rpmlist)``, ``.expire()``;
  ``BuildImageTask.initImageBuild(name, version, release, target_info, opts)``
  (checks the package list of the destination tag, then ``host.initImageBuild``);
  ``BaseBuildTask`` (a ``koji.tasks.BaseTaskHandler`` with ``checkHostArch``).
- koji.tasks.BaseTaskHandler: ``wait(subtasks, all=True, failany=True, canfail=...)``,
  ``getRepo``, ``uploadFile(path, remoteName=...)``, ``getUploadDir``, ``workdir``,
  ``taskinfo``, ``run_callbacks``.
- koji.daemon.SCM: ``assert_allowed(allowed, session, by_config, by_policy,
  policy_data)``, ``checkout(scmdir, session, uploadpath, logfile)``, ``get_source()``.
- hub (HostExports): ``subtask``, ``initImageBuild(task_id, build_info)``,
  ``completeImageBuild(task_id, build_id, results)``,
  ``moveImageBuildToScratch(task_id, results)``, ``failBuild(task_id, build_id)``;
  session: ``getBuildTarget``, ``getBuildConfig``, ``getNextRelease``, ``getChannel``,
  ``listTagged``, ``listArchives``, ``getBuild``.

Everything the tasks decide is in koji_hostimage.koji.builder (tested without Koji); the
compose runs in the buildroot through koji_hostimage.koji.buildroot.BuildrootRunner; export
and packing run on the builder host in koji_hostimage.pipeline.build_host_image.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import koji
import koji.tasks
from koji.daemon import SCM
from koji.tasks import ServerExit

from __main__ import BaseBuildTask, BuildImageTask, BuildRoot  # kojid's classes
from koji_hostimage.errors import HostImageError
from koji_hostimage.image.oci_layout import koji_arch_to_oci
from koji_hostimage.koji import builder as kojibuild
from koji_hostimage.koji.buildroot import BuildrootRunner
from koji_hostimage.koji.options import (
    CHILD_TASK_ARGS,
    CHILD_TASK_METHOD,
    PARENT_TASK_ARGS,
    PARENT_TASK_METHOD,
    with_defaults,
)
from koji_hostimage.manifest import Source
from koji_hostimage.pipeline import BuildRequest, build_host_image
from koji_hostimage.runner import run_checked

logger = logging.getLogger("koji.plugin.hostimage")

# Tests point this at their own file; kojid uses the default.
CONFIG_FILE = kojibuild.DEFAULT_CONFIG_FILE

# The same registration as the hub plugin's, so task parameters parse on the builder too
# (koji.tasks.parse_task_params); setdefault keeps whichever copy loaded first.
koji.tasks.LEGACY_SIGNATURES.setdefault(
    PARENT_TASK_METHOD, [[list(PARENT_TASK_ARGS), None, None, (None,)]]
)
koji.tasks.LEGACY_SIGNATURES.setdefault(
    CHILD_TASK_METHOD, [[list(CHILD_TASK_ARGS), None, None, (None,)]]
)

def load_config() -> kojibuild.BuilderConfig:
    try:
        return kojibuild.load_builder_config(CONFIG_FILE)
    except HostImageError as exc:
        raise koji.ConfigurationError(str(exc)) from exc


def _build_error(exc: HostImageError) -> koji.BuildError:
    """koji.GenericError subclasses reach the task result as their message alone
    (koji.daemon.TaskManager.runTask), so the user sees our error text unwrapped."""
    return koji.BuildError(str(exc))


def _scm_policy_data(task: koji.tasks.BaseTaskHandler, scratch: bool) -> dict[str, Any]:
    channel = task.session.getChannel(task.taskinfo["channel_id"], strict=True)["name"]
    return {"user_id": task.taskinfo["owner"], "channel": channel, "scratch": scratch}


def _checked_scm(task: koji.tasks.BaseTaskHandler, scm_url: str, scratch: bool) -> SCM:
    """The SCM of ``scm_url``, refused unless the builder's allowed_scms (and, when kojid
    is configured so, the hub's build_from_scm policy) allow it."""
    options = task.options
    scm = SCM(scm_url, allow_password=getattr(options, "allow_password_in_scm_url", False))
    scm.assert_allowed(
        allowed=options.allowed_scms,
        session=task.session,
        by_config=getattr(options, "allowed_scms_use_config", True),
        by_policy=getattr(options, "allowed_scms_use_policy", False),
        policy_data=_scm_policy_data(task, scratch),
    )
    return scm


class HostImageBuildTask(BuildImageTask):
    """Parent task: plan the arches, create the build, fan out, import, tag."""

    Methods = [PARENT_TASK_METHOD]
    _taskWeight = 0.2  # it mostly waits on its children

    def handler(self, target, scm_url, treefile, opts=None):
        raw_opts = dict(opts or {})
        opts = with_defaults(raw_opts)
        config = load_config()
        scratch = bool(opts["scratch"])

        target_info = self.session.getBuildTarget(target, strict=True)
        build_tag = target_info["build_tag"]
        buildconfig = self.session.getBuildConfig(build_tag)
        try:
            plan = kojibuild.plan_arches(
                kojibuild.tag_arches(buildconfig), opts["arches"], opts["failable_arches"]
            )
        except HostImageError as exc:
            raise _build_error(exc) from exc
        _checked_scm(self, scm_url, scratch)
        repo_info = self.getRepo(build_tag)

        name = opts["name"] or kojibuild.default_name(treefile)
        version = opts["version"] or time.strftime("%Y%m%d", time.gmtime())
        release = opts["release"] or self.session.getNextRelease(
            {"name": name, "version": version}
        )

        bld_info = None
        subtasks: dict[str, int] = {}
        try:
            if not scratch:
                bld_info = self.initImageBuild(name, version, release, target_info, opts)
                release = bld_info["release"]
            for arch in plan.arches:
                subtasks[arch] = self.session.host.subtask(
                    method=CHILD_TASK_METHOD,
                    arglist=[
                        name,
                        version,
                        release,
                        arch,
                        target_info,
                        build_tag,
                        repo_info,
                        scm_url,
                        treefile,
                        raw_opts,
                    ],
                    label=arch,
                    parent=self.id,
                    arch=arch,
                    channel=config.channel,
                )
            canfail = [subtasks[arch] for arch in plan.failable]
            self.logger.debug("createHostImage subtasks %r; may fail: %r", subtasks, canfail)
            results = self.wait(list(subtasks.values()), all=True, failany=True, canfail=canfail)
            # Failable arches may all have failed: that still is a failed build.
            if kojibuild.all_failed(results):
                raise koji.GenericError("all subtasks failed")
            ignored = kojibuild.failed_arches(subtasks, results)
            if ignored:
                self.logger.warning("failable arches failed: %s", ", ".join(ignored))
            results = {str(task_id): result for task_id, result in results.items()}
            if scratch:
                self.session.host.moveImageBuildToScratch(self.id, results)
            else:
                self.session.host.completeImageBuild(self.id, bld_info["id"], results)
        except (SystemExit, ServerExit, KeyboardInterrupt):
            raise  # kojid handles these itself (cancel, shutdown)
        except Exception:
            if bld_info:
                self.session.host.failBuild(self.id, bld_info["id"])
            raise

        if not scratch and not opts["skip_tag"]:
            tag_task_id = self.session.host.subtask(
                method="tagBuild",
                arglist=[target_info["dest_tag"], bld_info["id"], False, None, True],
                label="tag",
                parent=self.id,
                arch="noarch",
            )
            self.wait(tag_task_id)

        if scratch:
            where = ", ".join(
                os.path.join(koji.pathinfo.work(), koji.pathinfo.taskrelpath(task_id))
                for task_id in subtasks.values()
            )
            return f"Scratch host image build results in: {where}"
        return f"host image build results in: {koji.pathinfo.imagebuild(bld_info)}"


class CreateHostImageTask(BaseBuildTask):
    """Child task: one arch, composed in the buildroot, packed on the builder host."""

    Methods = [CHILD_TASK_METHOD]
    _taskWeight = 2.0

    def handler(
        self,
        name,
        version,
        release,
        arch,
        target_info,
        build_tag,
        repo_info,
        scm_url,
        treefile,
        opts=None,
    ):
        self.raw_opts = dict(opts or {})
        self.opts = with_defaults(self.raw_opts)
        self.config = load_config()
        self.arch = arch
        self.nvr = f"{name}-{version}-{release}"
        self.broot = None
        self.names = kojibuild.upload_names(self.nvr, arch, "0")
        self.task_log = Path(self.workdir) / "hostimage-task.log"
        self.pipeline_workdir: Path | None = None
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        handler = _attach_log(self.task_log)
        try:
            imgdata = self._create(
                name, version, release, target_info, build_tag, repo_info, scm_url, treefile
            )
        except (SystemExit, ServerExit, KeyboardInterrupt):
            logger.error("%s %s: cancelled", self.nvr, arch)
            raise
        except HostImageError as exc:
            logger.error("%s %s failed: %s", self.nvr, arch, exc)
            raise _build_error(exc) from exc
        except Exception as exc:
            logger.exception("%s %s failed: %s", self.nvr, arch, exc)
            raise
        finally:
            _detach_log(handler)
            logs = self._upload_logs()
            self._expire()
        imgdata["logs"] = logs
        return imgdata

    # -- steps ------------------------------------------------------------------------
    def _create(
        self, name, version, release, target_info, build_tag, repo_info, scm_url, treefile
    ) -> dict[str, Any]:
        arch = self.arch
        scratch = bool(self.opts["scratch"])
        # Cheap checks of the request first: no buildroot or checkout for a bad one.
        scm = _checked_scm(self, scm_url, scratch)
        kojibuild.check_treefile_path(treefile)
        base_image = self._base_image()
        previous = self._previous_archives(name, target_info)
        broot = self._buildroot(build_tag, repo_info)
        self.names = kojibuild.upload_names(self.nvr, arch, broot.id)

        checkout_dir = Path(broot.tmpdir()) / "hostimage-src"
        checkout_dir.mkdir(parents=True, exist_ok=True)
        self.run_callbacks(
            "preSCMCheckout",
            scminfo=scm.get_info(),
            build_tag=build_tag,
            scratch=scratch,
            buildroot=broot,
        )
        srcdir = scm.checkout(
            str(checkout_dir),
            self.session,
            self.getUploadDir(),
            str(Path(self.workdir) / self.names.checkout_log),
        )
        self.run_callbacks(
            "postSCMCheckout",
            scminfo=scm.get_info(),
            build_tag=build_tag,
            scratch=scratch,
            srcdir=srcdir,
            buildroot=broot,
        )
        treefile_path = kojibuild.treefile_in_checkout(Path(srcdir), treefile)

        self.pipeline_workdir = Path(broot.tmpdir()) / "hostimage-work"
        output_dir = Path(self.workdir) / "output"
        request = BuildRequest(
            treefile=treefile_path,
            output_dir=output_dir,
            arch=arch,
            name=name,
            version=version,
            release=str(release),
            engine=self.raw_opts.get("engine") or self.config.engine,
            extra_repos=self._repos(target_info, repo_info),
            previous=previous,
            base_image=base_image,
            sign_key=self.opts["sign_key"] or self.config.sign_key,
            gpg_homedir=self.config.gpg_homedir,
            server_cmd=list(self.config.server_cmd),
            source=Source(scm_url=scm_url, revision=_revision(scm), treefile=treefile),
            workdir=self.pipeline_workdir,
            runner=BuildrootRunner(
                broot, timeout=self.config.compose_timeout, cancel_grace=self.config.cancel_grace
            ),
        )
        result = build_host_image(request)
        if not result.changed or result.manifest is None or result.archive is None:
            raise koji.BuildError(
                f"{self.nvr} {arch}: the compose found nothing to change"
                f" (commit {result.commit}); no image was built"
            )

        names = self.names
        files = []
        for path, remote in (
            (result.archive, names.archive),
            (result.manifest_path, names.manifest),
            (result.compose_json_path, names.compose_json),
        ):
            if path is not None and Path(path).exists():
                self.uploadFile(str(path), remoteName=remote)
                files.append(remote)

        rpmlist = kojibuild.rpmlist_from_manifest(result.manifest)
        if not scratch:
            # kojid's way (kiwi does the same): external repo RPMs get their origin.
            broot.markExternalRPMs(rpmlist)
        logger.info(
            "%s %s: commit %s, %d packages", self.nvr, arch, result.manifest.commit, len(rpmlist)
        )
        imgdata = kojibuild.task_result(
            task_id=self.id,
            arch=arch,
            name=name,
            version=version,
            release=str(release),
            names=names,
            files=files,
            logs=[],
            rpmlist=rpmlist,
            manifest=result.manifest,
        )
        return imgdata

    def _buildroot(self, build_tag, repo_info):
        buildconfig = self.session.getBuildConfig(build_tag, event=repo_info.get("create_event"))
        bind_opts = None
        if not buildconfig["extra"].get("mock.new_chroot", True):
            # rpm-ostree's bubblewrap needs the host's /dev in a simple (non-nspawn) chroot.
            bind_opts = {"dirs": {"/dev": "/dev"}}
        else:
            logger.warning(
                "build tag %s uses mock's nspawn chroot: rpm-ostree needs"
                " mock.new_chroot=0 on the tag",
                buildconfig.get("name"),
            )
        broot = BuildRoot(
            self.session,
            self.options,
            build_tag,
            self.arch,
            self.id,
            repo_id=repo_info["id"],
            install_group=self.config.install_group,
            setup_dns=True,
            bind_opts=bind_opts,
        )
        self.broot = broot
        broot.workdir = self.workdir
        logger.info(
            "initializing buildroot %s (install group %s)", broot.id, self.config.install_group
        )
        broot.init()
        return broot

    def _repos(self, target_info, repo_info) -> list[str]:
        koji_repo = kojibuild.koji_repo_url(
            self.options.topurl, repo_info["id"], target_info["build_tag_name"], self.arch
        )
        user = [kojibuild.substitute_arch(url, self.arch) for url in self.opts["repo"]]
        return [koji_repo, *user]

    def _previous_archives(self, name, target_info) -> list[Path]:
        try:
            plan = kojibuild.delta_plan(self.raw_opts.get("delta_from"), self.config.delta_from)
        except HostImageError as exc:
            raise _build_error(exc) from exc
        if plan.nvrs:
            builds = [self.session.getBuild(nvr, strict=True) for nvr in plan.nvrs]
            strict = True
        elif plan.count:
            tagged = self.session.listTagged(target_info["dest_tag"], package=name)
            builds = kojibuild.pick_previous_builds(tagged, name, plan.count, self.nvr)
            strict = False  # a pruned old build must not fail a new one
        else:
            return []
        dest = Path(self.workdir) / "previous"
        dest.mkdir(parents=True, exist_ok=True)
        found = []
        for build in builds:
            try:
                found.append(self._fetch_previous(build, dest))
            except HostImageError as exc:
                if strict:
                    raise
                logger.warning("no delta from %s: %s", build.get("nvr"), exc)
        return found

    def _fetch_previous(self, build, dest: Path) -> Path:
        archives = self.session.listArchives(buildID=build["id"], type="image")
        archive = kojibuild.pick_archive(archives, self.arch)
        if archive is None:
            raise kojibuild.KojiBuildError(
                f"build {build.get('nvr')}: expected an archive ending .{self.arch}.oci.tar,"
                f" got {', '.join(a.get('filename', '?') for a in archives) or 'none'}"
            )
        filename = archive["filename"]
        if getattr(self.options, "topurl", None):
            url = kojibuild.previous_archive_url(self.options.topurl, build, filename)
            logger.info("fetching %s for deltas", url)
            return kojibuild.download(url, dest / filename, self.config.download_timeout)
        local = Path(koji.PathInfo(topdir=self.options.topdir).imagebuild(build)) / filename
        if not local.is_file():
            raise kojibuild.KojiBuildError(f"{local}: expected the archive, got nothing")
        return local

    def _base_image(self) -> Path | None:
        try:
            ref = kojibuild.base_image_source(self.opts["base_image"], self.config.base_image)
        except HostImageError as exc:
            raise _build_error(exc) from exc
        if ref is None or isinstance(ref, Path):
            return ref
        dest = Path(self.workdir) / "base-image.oci.tar"
        logger.info("copying base image %s", ref)
        run_checked(
            [
                "skopeo",
                "copy",
                "--override-arch",
                koji_arch_to_oci(self.arch),
                ref,
                f"oci-archive:{dest}",
            ],
            what="skopeo copy (base image)",
        )
        return dest

    def _expire(self) -> None:
        """Expire the buildroot (kojid's BuildRoot.expire) without hiding the task's error."""
        if self.broot is None:
            return
        try:
            self.broot.expire()
        except Exception:
            logger.exception("could not expire buildroot %s", self.broot.id)

    def _upload_logs(self) -> list[str]:
        """Upload this attempt's logs (also after a failure); return their names."""
        names = self.names
        uploaded = []
        candidates = [(self.task_log, names.task_log)]
        if self.pipeline_workdir is not None:
            candidates.append((self.pipeline_workdir / "compose.log", names.compose_log))
        for path, remote in candidates:
            try:
                if path.is_file() and path.stat().st_size > 0:
                    self.uploadFile(str(path), remoteName=remote)
                    uploaded.append(remote)
            except Exception:  # a failed log upload must not hide the task's own error
                logger.exception("could not upload %s", remote)
        # SCM.checkout streams its log to the hub itself (koji.daemon.log_output).
        if (Path(self.workdir) / names.checkout_log).is_file():
            uploaded.append(names.checkout_log)
        return uploaded


def _revision(scm: SCM) -> str | None:
    """The checked-out commit (SCM.get_source puts it in the URL fragment)."""
    try:
        source = scm.get_source()["source"]
    except Exception as exc:
        logger.warning("no source revision: %s", exc)
        return None
    return source.rsplit("#", 1)[1] if "#" in source else None


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOGGERS = ("koji_hostimage", "koji.plugin.hostimage")


def _attach_log(path: Path) -> logging.Handler:
    """Send this task's messages (ours and the pipeline's) to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    for name in _LOGGERS:
        named = logging.getLogger(name)
        named.addHandler(handler)
        if named.getEffectiveLevel() > logging.INFO:
            named.setLevel(logging.INFO)
    return handler


def _detach_log(handler: logging.Handler) -> None:
    for name in _LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
