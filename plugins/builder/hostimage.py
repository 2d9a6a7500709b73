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

Everything the tasks decide is in koji_hostimage.koji (tested without Koji): builder.py
(arches, names, the pipeline request, rpmlist, result, logs), previous.py (earlier builds
for deltas), config.py (this plugin's settings); the compose runs in the buildroot through
koji_hostimage.koji.buildroot.BuildrootRunner; export and packing run on the builder host
in koji_hostimage.pipeline.build_host_image.

Task parameters are not registered in koji.tasks.LEGACY_SIGNATURES here: only the hub
parses them (kojihub's policy_data_from_task_args and scheduler; kojid calls the handler
with the arguments as they are), and the hub plugin registers them.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import koji
import koji.tasks
from koji.daemon import SCM

from __main__ import BaseBuildTask, BuildImageTask, BuildRoot  # kojid's classes
from koji_hostimage.errors import HostImageError
from koji_hostimage.koji import builder as kojibuild
from koji_hostimage.koji import previous
from koji_hostimage.koji import rpmlist as rpmlist_mod
from koji_hostimage.koji.buildroot import BuildrootRunner
from koji_hostimage.koji.config import DEFAULT_CONFIG_FILE, BuilderConfig, load_builder_config
from koji_hostimage.koji.options import CHILD_TASK_METHOD, PARENT_TASK_METHOD, with_defaults
from koji_hostimage.manifest import Source
from koji_hostimage.pipeline import build_host_image

logger = logging.getLogger("koji.plugin.hostimage")

# Tests point this at their own file; kojid uses the default.
CONFIG_FILE = DEFAULT_CONFIG_FILE


def load_config() -> BuilderConfig:
    try:
        return load_builder_config(CONFIG_FILE)
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
            kojibuild.check_chroot_mode(buildconfig, opts["engine"] or config.engine)
        except HostImageError as exc:
            raise _build_error(exc) from exc
        scm = _checked_scm(self, scm_url, scratch)
        repo_info = self.getRepo(build_tag)

        name = opts["name"] or kojibuild.default_name(treefile)
        try:
            version = opts["version"] or self._next_version(
                scm, treefile, name, target_info, plan.arches[0]
            )
        except HostImageError as exc:
            raise _build_error(exc) from exc
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
                    arglist=[name, version, release, arch, target_info, build_tag, repo_info,
                             scm_url, treefile, raw_opts],  # CHILD_TASK_ARGS
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
        except kojibuild.TASK_ENDING:
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

        return kojibuild.result_message(list(subtasks.values()), None if scratch else bld_info)

    def _next_version(self, scm, treefile, name, target_info, arch) -> str:
        """The treefile's automatic-version-prefix numbered on from the latest tagged
        build (kojibuild.next_build_version); the checkout only reads the treefile."""
        checkout = Path(self.workdir) / "checkout"
        checkout.mkdir(parents=True, exist_ok=True)
        srcdir = scm.checkout(str(checkout), self.session, self.getUploadDir(),
                              str(Path(self.workdir) / "checkout-version.log"))
        keys = kojibuild.treefile_version_keys(Path(srcdir), treefile, arch)
        last = previous.latest_version(self.session, target_info["dest_tag"], name)
        version = kojibuild.next_build_version(
            keys, last, datetime.datetime.now(datetime.UTC),
            taken=lambda v: self.session.getNextRelease({"name": name, "version": v}) != "1",
        )
        self.logger.info("version %s (after %s, prefix %s)", version, last,
                         keys.get("automatic-version-prefix", "the date"))
        return version


class CreateHostImageTask(BaseBuildTask):
    """Child task: one arch, composed in the buildroot, packed on the builder host."""

    Methods = [CHILD_TASK_METHOD]
    _taskWeight = 2.0

    def handler(self, name, version, release, arch, target_info, build_tag, repo_info, scm_url,
                treefile, opts=None):
        self.opts = with_defaults(opts)
        self.config = load_config()
        self.arch = arch
        self.nvr = f"{name}-{version}-{release}"
        self.broot = None
        self.names = kojibuild.upload_names(self.nvr, arch, "0")
        self.task_log = Path(self.workdir) / "hostimage-task.log"
        self.pipeline_workdir: Path | None = None
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        cancelled = False
        try:
            with kojibuild.task_log(self.task_log):
                imgdata = self._create_logged(
                    name, version, release, target_info, build_tag, repo_info, scm_url,
                    treefile
                )
        except kojibuild.TASK_ENDING:
            # Cancelled (or kojid stopping): the hub no longer lets this host upload to
            # the task or change its buildroot ("host N does not own task M").
            cancelled = True
            raise
        finally:
            logs = [] if cancelled else self._upload_logs()
            if not cancelled:
                self._expire()
        imgdata["logs"] = logs
        return imgdata

    def _create_logged(self, *args) -> dict[str, Any]:
        """``_create``, with its outcome in the task log (the log is closed after this)."""
        try:
            return self._create(*args)
        except kojibuild.TASK_ENDING:
            logger.warning("%s %s: stopped (task cancelled or kojid stopping)", self.nvr,
                           self.arch)
            raise
        except HostImageError as exc:
            logger.error("%s %s failed: %s", self.nvr, self.arch, exc)
            raise _build_error(exc) from exc
        except Exception as exc:
            logger.exception("%s %s failed: %s", self.nvr, self.arch, exc)
            raise

    # -- steps ------------------------------------------------------------------------
    def _create(
        self, name, version, release, target_info, build_tag, repo_info, scm_url, treefile
    ) -> dict[str, Any]:
        arch = self.arch
        scratch = bool(self.opts["scratch"])
        # Cheap checks of the request first: no buildroot or checkout for a bad one.
        scm = _checked_scm(self, scm_url, scratch)
        kojibuild.check_treefile_path(treefile)
        base_image = kojibuild.fetch_base_image(
            self.opts["base_image"], self.config.base_image, arch, Path(self.workdir)
        )
        earlier = self._previous_builds(name, target_info)
        broot = self._buildroot(build_tag, repo_info)
        self.names = kojibuild.upload_names(self.nvr, arch, broot.id)

        checkout_dir = Path(broot.tmpdir()) / "hostimage-src"
        checkout_dir.mkdir(parents=True, exist_ok=True)
        self.run_callbacks("preSCMCheckout", scminfo=scm.get_info(), build_tag=build_tag,
                           scratch=scratch, buildroot=broot)
        srcdir = scm.checkout(str(checkout_dir), self.session, self.getUploadDir(),
                              str(Path(self.workdir) / self.names.checkout_log))
        self.run_callbacks("postSCMCheckout", scminfo=scm.get_info(), build_tag=build_tag,
                           scratch=scratch, srcdir=srcdir, buildroot=broot)
        treefile_path = kojibuild.treefile_in_checkout(Path(srcdir), treefile)

        self.pipeline_workdir = Path(broot.tmpdir()) / "hostimage-work"
        koji_repo = kojibuild.koji_repo_url(
            self.options.topurl, repo_info["id"], target_info["build_tag_name"], arch
        )
        request = kojibuild.build_request(
            opts=self.opts, config=self.config, treefile=treefile_path,
            output_dir=Path(self.workdir) / "output", workdir=self.pipeline_workdir,
            arch=arch, name=name, version=version, release=str(release),
            koji_repo=koji_repo, previous=earlier.deltas, seed=earlier.seed,
            base_image=base_image,
            source=Source(scm_url=scm_url, revision=_revision(scm), treefile=treefile),
            source_root=Path(srcdir), source_date_epoch=kojibuild.scm_commit_time(Path(srcdir)),
            runner=BuildrootRunner(
                broot, timeout=self.config.compose_timeout, cancel_grace=self.config.cancel_grace
            ),
        )
        result = build_host_image(request)
        names = self.names
        uploads = kojibuild.output_uploads(result, names, f"{self.nvr} {arch}")
        rpmlist = rpmlist_mod.rpmlist_from_manifest(result.manifest)
        if not scratch:
            # kojihub's import would refuse these only after the upload: check first.
            self._check_rpmlist(broot, rpmlist, target_info["build_tag_name"])
        files = []
        for path, remote in uploads:
            self.uploadFile(str(path), remoteName=remote)
            files.append(remote)
        logger.info(
            "%s %s: commit %s, %d packages", self.nvr, arch, result.manifest.commit, len(rpmlist)
        )
        return kojibuild.task_result(
            task_id=self.id, arch=arch, name=name, version=version, release=str(release),
            names=names, files=files, logs=[], rpmlist=rpmlist, manifest=result.manifest,
        )

    def _check_rpmlist(self, broot, rpmlist, build_tag_name) -> None:
        """Give external rpms their origin as kojid does (kiwi too), then refuse rpms
        kojihub's importImageInternal would refuse, with the whole list."""
        no_origin = rpmlist_mod.mark_external_rpms(broot.markExternalRPMs, rpmlist)
        if no_origin:
            logger.info("not from the build tag's repos: %s", ", ".join(no_origin))
        missing, mismatched = rpmlist_mod.unknown_rpms(rpmlist, self._get_rpms)
        rpmlist_mod.check_rpms_known(missing, mismatched, build_tag_name)

    def _get_rpms(self, queries):
        """``getRPM`` for each query, in one multicall (koji.ClientSession.multicall)."""
        with self.session.multicall(batch=1000) as multicall:
            calls = [multicall.getRPM(query) for query in queries]
        return [call.result for call in calls]

    def _buildroot(self, build_tag, repo_info):
        buildconfig = self.session.getBuildConfig(build_tag, event=repo_info.get("create_event"))
        kojibuild.check_chroot_mode(buildconfig, self.opts["engine"] or self.config.engine)
        broot = BuildRoot(
            self.session, self.options, build_tag, self.arch, self.id,
            repo_id=repo_info["id"], install_group=self.config.install_group, setup_dns=True,
        )
        self.broot = broot
        broot.workdir = self.workdir
        logger.info(
            "initializing buildroot %s (install group %s)", broot.id, self.config.install_group
        )
        broot.init()
        return broot

    def _previous_builds(self, name, target_info) -> previous.PreviousBuilds:
        plan = previous.delta_plan(self.opts["delta_from"], self.config.delta_from)
        return previous.previous_builds(
            self.session,
            plan,
            name=name,
            dest_tag=target_info["dest_tag"],
            arch=self.arch,
            exclude_nvr=self.nvr,
            dest=Path(self.workdir) / "previous",
            topurl=getattr(self.options, "topurl", None),
            topdir=getattr(self.options, "topdir", None),
            timeout=self.config.download_timeout,
        )

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
        for path, remote in kojibuild.log_uploads(names, self.task_log, self.pipeline_workdir):
            try:
                self.uploadFile(str(path), remoteName=remote)
                uploaded.append(remote)
            except Exception:  # a failed log upload must not hide the task's own error
                logger.exception("could not upload %s", remote)
        # SCM.checkout streams its log to the hub itself (koji.daemon.log_output).
        if (Path(self.workdir) / names.checkout_log).is_file():
            uploaded.append(names.checkout_log)
        return uploaded


def _revision(scm: SCM) -> str | None:
    """The checked-out commit, or None when the SCM cannot say."""
    try:
        return kojibuild.scm_revision(scm.get_source()["source"])
    except Exception as exc:
        logger.warning("no source revision: %s", exc)
        return None
