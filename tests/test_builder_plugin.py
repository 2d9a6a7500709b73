# SPDX-License-Identifier: GPL-2.0-or-later
"""The kojid plugin plugins/builder/hostimage.py: hostImageBuild and createHostImage.

Every test here runs the tasks with tests/kojid_standin.py, a STAND-IN for kojid and
kojihub (neither is installable): kojid's BuildRoot without mock (commands run for real on
this host below a temporary root), kojid's two base task classes re-built on the real
koji.tasks.BaseTaskHandler, and a hub session that records every call. The SCM checkout
is real (koji.daemon.SCM cloning a git repository over HTTP on 127.0.0.1), and the
child-task tests run the real pipeline (dnf engine, ostree, OCI packing).
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import koji
import koji.tasks
import pytest
import yaml
from httptools import static_server
from kojid_standin import (
    StandinBuildRoot,
    StandinHub,
    fault_of,
    load_plugin,
    make_handler,
    run_like_kojid,
    standin_options,
)

from koji_hostimage.errors import KojiBuildError
from koji_hostimage.koji import builder as kojibuild
from koji_hostimage.koji.options import policy_signatures

REPO_ROOT = Path(__file__).resolve().parent.parent
SCM_URL = "git+https://scm.example.com/os/config.git#main"
ALLOWED = "scm.example.com:/os/*:no"
TARGET = StandinHub.TARGET
REPO = StandinHub.REPO


@pytest.fixture(scope="module")
def plugin():
    module = load_plugin()
    # The shipped config file, read the way kojid's plugin reads it.
    module.CONFIG_FILE = str(REPO_ROOT / "conf" / "kojid" / "hostimage.conf")
    return module


def canned_children(failing=()):
    """A child runner for the stand-in hub: createHostImage "succeeds" with a result of
    the real shape, or fails with a koji.BuildError for arches in ``failing``."""

    def run(hub, method, arglist, task_id):
        assert method == "createHostImage"
        # the arguments fit the child's signature as the hub plugin registers it for
        # policies (koji.tasks.parse_task_params applies it the same way)
        (signature,) = policy_signatures()[method]
        params = koji.util.apply_argspec(signature, *koji.decode_args(*arglist))
        assert set(params) == {"name", "version", "release", "arch", "target_info",
                               "build_tag", "repo_info", "url", "treefile", "opts"}
        name, version, release, arch = arglist[:4]
        if arch in failing:
            raise koji.BuildError(f"compose failed on {arch}")
        nvr = f"{name}-{version}-{release}"
        return {"arch": arch, "task_id": task_id, "name": name, "version": version,
                "release": release, "files": [f"{nvr}.{arch}.oci.tar"],
                "logs": [f"hostimage-{arch}-1.log"], "rpmlist": []}

    return run


def run_parent(plugin, tmp_path, opts=None, failing=(), **hub_kwargs):
    hub = StandinHub(upload_root=tmp_path / "hub", child_runner=canned_children(failing),
                     **hub_kwargs)
    options = standin_options(tmp_path, topurl="http://koji.invalid/kojifiles",
                              allowed_scms=ALLOWED)
    params = [TARGET["name"], SCM_URL, "host.yaml", opts if opts is not None else {}]
    handler = make_handler(plugin.HostImageBuildTask, hub, options, "hostImageBuild", params)
    state, result = run_like_kojid(handler)
    return hub, handler.id, state, result


def subtasks_of(hub, method="createHostImage"):
    return [(args, kwargs) for args, kwargs in hub.call_args("host.subtask")
            if kwargs.get("method") == method]


def child_ids(hub):
    return {info["request"][3]: task_id for task_id, info in hub.tasks.items()
            if info["method"] == "createHostImage"}


# ------------------------------------------------------------------------------ parent


def test_parent_fans_out_per_arch_then_imports_and_tags(plugin, tmp_path):
    opts = {"version": "42.1"}
    hub, task_id, state, result = run_parent(plugin, tmp_path, opts)
    assert state == "closed", result
    assert result == "host image build results in: " + koji.pathinfo.imagebuild(
        {"name": "host", "version": "42.1", "release": "1", "volume_name": "DEFAULT"})

    # The exact conversation with the hub's host API, in order.
    assert hub.called("host.") == [
        "host.initImageBuild",
        "host.subtask", "host.subtask",
        "host.taskSetWait", "host.taskWait", "host.taskWaitResults",
        "host.completeImageBuild",
        "host.subtask",
        "host.taskSetWait", "host.taskWait", "host.taskWaitResults",
    ]
    assert hub.call_args("host.initImageBuild") == [
        ((task_id, {"name": "host", "version": "42.1", "release": "1", "epoch": 0}), {})
    ]
    children = subtasks_of(hub)
    assert [kwargs["arch"] for _, kwargs in children] == ["x86_64", "aarch64"]
    for (_, kwargs), arch in zip(children, ["x86_64", "aarch64"], strict=True):
        assert kwargs == {
            "method": "createHostImage",
            "arglist": ["host", "42.1", "1", arch, TARGET, 10, REPO, SCM_URL, "host.yaml",
                        opts],
            "label": arch, "parent": task_id, "arch": arch, "channel": "image",
        }
    ids = child_ids(hub)
    ((wait_args, wait_kwargs),) = hub.call_args("host.taskWaitResults")[:1]
    assert wait_args == (task_id, [ids["x86_64"], ids["aarch64"]])
    assert wait_kwargs == {"canfail": []}
    ((complete_args, _),) = hub.call_args("host.completeImageBuild")
    build_id = hub.call_args("host.completeImageBuild")[0][0][1]
    assert complete_args[0] == task_id
    assert complete_args[2] == {str(ids[a]): hub.results[ids[a]] for a in ids}
    assert all(isinstance(key, str) for key in complete_args[2])  # XML-RPC dict keys
    (tag_call,) = subtasks_of(hub, "tagBuild")
    assert tag_call[1] == {"method": "tagBuild",
                           "arglist": [TARGET["dest_tag"], build_id, False, None, True],
                           "label": "tag", "parent": task_id, "arch": "noarch"}
    assert "host.failBuild" not in hub.called()


def test_parent_checks_the_scm_target_and_package_list(plugin, tmp_path):
    hub, _, _, _ = run_parent(plugin, tmp_path, {"version": "1"})
    session_calls = hub.called()
    assert session_calls[:3] == ["getBuildTarget", "getBuildConfig", "getTaskInfo"]
    assert "getChannel" in session_calls  # SCM policy data: the task's channel
    assert "getPackageConfig" in session_calls  # kojid's initImageBuild
    assert hub.call_args("getNextRelease")[0][0][0]["name"] == "host"


def test_a_failable_arch_failing_still_completes_the_build(plugin, tmp_path):
    opts = {"failable_arches": ["aarch64"], "version": "1"}
    hub, task_id, state, result = run_parent(plugin, tmp_path, opts, failing=("aarch64",))
    assert state == "closed", result
    ids = child_ids(hub)
    wait_kwargs = hub.call_args("host.taskWaitResults")[0][1]
    assert wait_kwargs == {"canfail": [ids["aarch64"]]}
    ((complete_args, _),) = hub.call_args("host.completeImageBuild")
    results = complete_args[2]
    assert results[str(ids["x86_64"])]["arch"] == "x86_64"
    assert results[str(ids["aarch64"])] == {
        "faultCode": koji.BuildError.faultCode, "faultString": "compose failed on aarch64"
    }
    assert "host.failBuild" not in hub.called()
    assert len(subtasks_of(hub, "tagBuild")) == 1


def test_a_required_arch_failing_fails_the_build(plugin, tmp_path):
    hub, task_id, state, fault = run_parent(plugin, tmp_path, {"version": "1"},
                                            failing=("aarch64",))
    assert state == "failed"
    assert "compose failed on aarch64" in fault["faultString"]
    build_id = 700  # the stand-in hub's first build id
    assert hub.call_args("host.failBuild") == [((task_id, build_id), {})]
    assert "host.completeImageBuild" not in hub.called()
    assert subtasks_of(hub, "tagBuild") == []


def test_every_arch_failing_fails_even_when_all_are_failable(plugin, tmp_path):
    opts = {"failable_arches": ["x86_64", "aarch64"], "version": "1"}
    hub, task_id, state, fault = run_parent(plugin, tmp_path, opts,
                                            failing=("x86_64", "aarch64"))
    assert state == "failed"
    assert fault["faultString"] == "all subtasks failed"
    assert hub.call_args("host.failBuild") == [((task_id, 700), {})]
    assert "host.completeImageBuild" not in hub.called()


def test_scratch_moves_results_and_never_creates_or_tags_a_build(plugin, tmp_path):
    hub, task_id, state, result = run_parent(plugin, tmp_path,
                                             {"scratch": True, "version": "1"})
    assert state == "closed", result
    assert result.startswith("Scratch host image build results in: ")
    called = hub.called("host.")
    assert "host.initImageBuild" not in called
    assert "host.completeImageBuild" not in called
    ((args, _),) = hub.call_args("host.moveImageBuildToScratch")
    assert args[0] == task_id and len(args[1]) == 2
    assert subtasks_of(hub, "tagBuild") == []
    # scratch builds need no package-list entry
    hub2, _, state2, _ = run_parent(plugin, tmp_path / "unlisted",
                                    {"scratch": True, "version": "1"}, package_listed=False)
    assert state2 == "closed"


def test_skip_tag_completes_without_tagging(plugin, tmp_path):
    hub, _, state, result = run_parent(plugin, tmp_path, {"skip_tag": True, "version": "1"})
    assert state == "closed", result
    assert "host.completeImageBuild" in hub.called()
    assert subtasks_of(hub, "tagBuild") == []


def test_an_exception_after_init_fails_the_build_and_is_reraised(plugin, tmp_path):
    boom = koji.GenericError("hub refused the import")
    hub, task_id, state, fault = run_parent(plugin, tmp_path, {"version": "1"},
                                            fail_methods={"host.completeImageBuild": boom})
    assert state == "failed"
    assert fault["faultString"] == "hub refused the import"
    assert hub.call_args("host.failBuild") == [((task_id, 700), {})]
    assert subtasks_of(hub, "tagBuild") == []


def test_arches_are_the_tag_arches_intersected_with_the_request(plugin, tmp_path):
    hub, _, state, _ = run_parent(plugin, tmp_path,
                                  {"arches": ["s390x", "x86_64"], "version": "1"})
    assert state == "closed"
    assert [kw["arch"] for _, kw in subtasks_of(hub)] == ["x86_64"]

    hub, _, state, fault = run_parent(plugin, tmp_path / "none", {"arches": ["s390x"]})
    assert state == "failed"
    assert "expected at least one of the build tag's arches (x86_64, aarch64)" in (
        fault["faultString"])
    assert "host.initImageBuild" not in hub.called()


def test_a_disallowed_scm_fails_before_any_build_exists(plugin, tmp_path):
    hub = StandinHub(upload_root=tmp_path / "hub", child_runner=canned_children())
    options = standin_options(tmp_path, allowed_scms="other.example.com:/*:no")
    handler = make_handler(plugin.HostImageBuildTask, hub, options, "hostImageBuild",
                           [TARGET["name"], SCM_URL, "host.yaml", {}])
    state, fault = run_like_kojid(handler)
    assert state == "failed"
    assert "scm.example.com:/os/config.git is not in the list of allowed SCMs" in (
        fault["faultString"])
    assert hub.called("host.") == []


def test_an_unlisted_package_fails_before_fan_out(plugin, tmp_path):
    hub, _, state, fault = run_parent(plugin, tmp_path, {"version": "1"},
                                      package_listed=False)
    assert state == "failed"
    assert "not in list for tag hostimage-dest" in fault["faultString"]
    assert subtasks_of(hub) == []
    assert "host.failBuild" not in hub.called()  # no build was created


# ------------------------------------------------------------------------------ child


def _git(*args, cwd):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def koji_site(tmp_path_factory, example_content, example_content_v2):
    """Koji's web root (topurl) and an SCM, both over HTTP on 127.0.0.1.

    - kojifiles/repos/hostimage-build/100/x86_64: the build tag's repo (the example RPMs),
      and repo 101: a newer one (the example update: greeter 1.1, host-release 2);
    - example/: the repo the treefile's own example.repo names (the same v1 RPMs);
    - scm/os/config.git: a bare git repo with host.yaml (the example treefile),
      broken.yaml (a malformed one) and escape.yaml (a symlink out of the checkout),
      served over git's dumb HTTP protocol.
    """
    site = tmp_path_factory.mktemp("site")
    repos = site / "kojifiles" / "repos" / "hostimage-build"
    repos.mkdir(parents=True)
    shutil.copytree(example_content.repo_dir, repos / "100" / "x86_64")
    shutil.copytree(example_content_v2.repo_dir, repos / "101" / "x86_64")
    shutil.copytree(example_content.repo_dir, site / "example")
    with static_server(site) as (base, requests):
        work = site / "checkout"
        work.mkdir()
        treefile = yaml.safe_load(example_content.treefile.read_text())
        treefile["repos"] = ["example"]
        (work / "host.yaml").write_text(yaml.safe_dump(treefile))
        (work / "example.repo").write_text(
            f"[example]\nname=example\nbaseurl={base}/example\ngpgcheck=0\n")
        (work / "broken.yaml").write_text("ref: example/${basearch}/host\npackages: 7\n")
        (work / "escape.yaml").symlink_to("/etc/hostname")
        leak = dict(treefile, **{"add-files": [["/etc/hostname", "/usr/share/leak"]]})
        (work / "leak.yaml").write_text(yaml.safe_dump(leak))
        _git("init", "-q", "-b", "main", cwd=work)
        _git("add", ".", cwd=work)
        _git("commit", "-q", "-m", "os config", cwd=work)
        bare = site / "scm" / "os" / "config.git"
        bare.parent.mkdir(parents=True)
        _git("clone", "-q", "--bare", str(work), str(bare), cwd=site)
        _git("update-server-info", cwd=bare)
        host_port = base.split("://", 1)[1]
        rpms = koji_rpm_table([example_content.repo_dir, example_content_v2.repo_dir])
        yield {"rpms": rpms, "base": base, "site": site, "topurl": f"{base}/kojifiles",
               "requests": requests,
               "scm_url": f"git+{base}/scm/os/config.git#main",
               "allowed": f"{host_port.split(':')[0]}*:/scm/os/*:no",
               "nevras": example_content.nevras}


def koji_rpm_table(repo_dirs: list[Path]) -> list[dict]:
    """The hub's rpminfo rows for the RPM files in ``repo_dirs``, read from the files'
    own headers (``rpm -qp``), as kojihub's import_rpm records them."""
    rows, seen = [], set()
    fmt = "%{NAME}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SIGMD5}\t%{SIZE}\t%{BUILDTIME}\n"
    for path in sorted(p for d in repo_dirs for p in Path(d).glob("**/*.rpm")):
        out = subprocess.run(["rpm", "-qp", "--nosignature", "--qf", fmt, str(path)],
                             check=True, capture_output=True, text=True).stdout
        name, version, release, arch, sigmd5, size, buildtime = out.strip().split("\t")
        if (name, version, release, arch) in seen:
            continue
        seen.add((name, version, release, arch))
        rows.append({"id": len(rows) + 1, "name": name, "version": version,
                     "release": release, "arch": arch, "epoch": None,
                     "payloadhash": sigmd5, "size": int(size), "buildtime": int(buildtime),
                     "external_repo_id": 0, "external_repo_name": "INTERNAL"})
    return rows


def run_child(plugin, tmp_path, site, treefile="host.yaml", opts=None, version="42.1",
              repo_id=100, **hub_kwargs):
    hub_kwargs.setdefault("rpms", site["rpms"])
    hub = StandinHub(upload_root=tmp_path / "hub", tag_arches="x86_64", **hub_kwargs)
    options = standin_options(tmp_path, topurl=site["topurl"], allowed_scms=site["allowed"])
    opts = {"engine": "dnf", **(opts or {})}
    params = ["host", version, "3", "x86_64", dict(TARGET), TARGET["build_tag"],
              dict(REPO, id=repo_id), site["scm_url"], treefile, opts]
    StandinBuildRoot.instances.clear()
    handler = make_handler(plugin.CreateHostImageTask, hub, options, "createHostImage",
                           params)
    state, result = run_like_kojid(handler)
    (broot,) = StandinBuildRoot.instances
    return hub, handler.id, state, result, broot


@pytest.fixture(scope="module")
def built(plugin, tmp_path_factory, koji_site):
    """One real createHostImage run: compose in the stand-in buildroot, pack on the host."""
    tmp = tmp_path_factory.mktemp("child")
    return tmp, *run_child(plugin, tmp, koji_site)


def test_child_builds_a_real_image_in_the_buildroot(built):
    tmp, hub, task_id, state, result, broot = built
    assert state == "closed", result.get("faultString")
    nvr = "host-42.1-3"
    assert result["files"] == [f"{nvr}.x86_64.oci.tar", f"{nvr}.x86_64.hostimage.json",
                               f"{nvr}.x86_64.compose.json"]
    task_dir = hub.task_dir(task_id)
    for name in result["files"] + result["logs"]:
        assert (task_dir / name).is_file(), name

    archive = task_dir / f"{nvr}.x86_64.oci.tar"
    inspect = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], check=True,
                             capture_output=True, text=True)
    labels = json.loads(inspect.stdout)["Labels"]
    manifest = json.loads((task_dir / f"{nvr}.x86_64.hostimage.json").read_text())
    assert manifest["commit"] == result["commit"] == labels["com.coreos.ostree-commit"]
    assert (manifest["name"], manifest["version"], manifest["release"]) == ("host", "42.1", "3")
    assert manifest["source"]["scm_url"].endswith("/scm/os/config.git#main")
    assert len(manifest["source"]["revision"]) == 40
    # the archive's repo holds the commit hostimage.json names, on its ref
    ref_member = f"srv/repo/refs/heads/{manifest['ref']}"
    assert _archive_file(archive, ref_member).decode().strip() == manifest["commit"]

    # the rpmlist is the composed tree's packages, in kojihub's shape
    nevras = sorted("{name}-{version}-{release}.{arch}".format(**r) for r in result["rpmlist"])
    expected = sorted(p["nevra"] for p in manifest["packages"])
    assert nevras == expected
    assert {n.rsplit("-", 2)[0] for n in nevras} >= {"host-kernel", "greeter"}


def test_the_rpmlist_carries_each_rpms_own_header_digest_size_and_buildtime(built, koji_site):
    # kojihub's add_external_rpm refuses a payloadhash other than the one it recorded;
    # these come from the composed tree's rpmdb and must equal the RPM files' headers.
    _, hub, task_id, state, result, broot = built
    assert state == "closed", result.get("faultString")
    table = {(r["name"], r["version"], r["release"], r["arch"]): r for r in koji_site["rpms"]}
    for entry in result["rpmlist"]:
        row = table[(entry["name"], entry["version"], entry["release"], entry["arch"])]
        assert len(entry["payloadhash"]) == 32, entry
        assert (entry["payloadhash"], entry["size"], entry["buildtime"]) == (
            row["payloadhash"], row["size"], row["buildtime"]), entry["name"]
    # hostimage.json records them too
    manifest = json.loads((hub.task_dir(task_id) / result["manifest"]).read_text())
    assert all(len(p["payloadhash"]) == 32 and p["size"] > 0 for p in manifest["packages"])
    # every package was checked against the hub in one multicall, before the upload
    names = hub.called()
    assert names.count("getRPM") == len(result["rpmlist"])
    assert max(i for i, n in enumerate(names) if n == "getRPM") < names.index("uploadWrapper")


def test_rpms_koji_does_not_know_fail_the_task_before_any_upload(plugin, tmp_path, koji_site):
    rows = [r for r in koji_site["rpms"] if r["name"] not in ("greeter", "host-kernel")]
    hub, task_id, state, result, broot = run_child(plugin, tmp_path, koji_site, rpms=rows)
    assert state == "failed"
    message = result["faultString"]
    assert "2 package(s) Koji does not know: greeter-1.0-1.noarch, host-kernel-" in message
    assert "koji import" in message and "--scratch" in message
    uploaded = [Path(args[0]).name for args, _ in hub.call_args("uploadWrapper")]
    assert uploaded and all(name.endswith(".log") for name in uploaded), uploaded  # logs only
    assert not list(hub.task_dir(task_id).glob("*.oci.tar"))


def test_a_rebuilt_rpm_with_another_digest_is_refused(plugin, tmp_path, koji_site):
    rows = [dict(r, payloadhash="0" * 32) if r["name"] == "greeter" else r
            for r in koji_site["rpms"]]
    hub, task_id, state, result, broot = run_child(plugin, tmp_path, koji_site, rpms=rows)
    assert state == "failed"
    assert "differ from the RPM Koji has" in result["faultString"]
    assert "greeter-1.0-1.noarch" in result["faultString"]


def test_a_cancelled_child_neither_uploads_nor_logs_an_error(plugin, tmp_path, koji_site,
                                                             caplog):
    # kojid cancels a task by signalling its process (KeyboardInterrupt here); the hub
    # then refuses this host's uploads for the task ("host N does not own task M").
    with pytest.raises(KeyboardInterrupt):
        run_child(plugin, tmp_path, koji_site,
                  fail_methods={"getBuildConfig": KeyboardInterrupt()})
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == []
    assert any("stopped (task cancelled or kojid stopping)" in r.message
               for r in caplog.records)
    assert not list((tmp_path / "hub").rglob("*.log"))  # nothing uploaded


def test_scratch_builds_skip_the_rpm_check(plugin, tmp_path, koji_site):
    hub, task_id, state, result, broot = run_child(plugin, tmp_path, koji_site, rpms=[],
                                                   opts={"scratch": True})
    assert state == "closed", result.get("faultString")
    assert "getRPM" not in hub.called()


def test_child_composes_from_the_build_tag_repo(built, koji_site):
    # The build tag's repo on Koji's topurl was one of the compose's repos (dnf fetched
    # its metadata; the treefile's own repo lives elsewhere on the same server).
    requested = koji_site["requests"].paths
    assert "/kojifiles/repos/hostimage-build/100/x86_64/repodata/repomd.xml" in requested
    assert "/example/repodata/repomd.xml" in requested


def test_child_ran_the_compose_inside_the_buildroot(built):
    tmp, hub, task_id, state, result, broot = built
    assert broot.install_group == "hostimage-build"
    assert broot.bind_opts is None  # mock's default nspawn chroot needs no extra binds
    assert broot.initialized and broot.expired
    dnf_calls = [args for args in broot.mock_calls if "dnf" in args]
    assert dnf_calls, broot.mock_calls
    (dnf,) = dnf_calls
    assert dnf[:2] == ["--chroot", "--"]
    assert any(a.startswith("--installroot=/chroot_tmpdir/") for a in dnf)
    # the compose log holds the command and dnf's own output
    compose_log = (hub.task_dir(task_id) / result["logs"][1]).read_text()
    assert "$ dnf --config=/chroot_tmpdir/" in compose_log and "Installing" in compose_log
    assert hub.called("host.") == ["host.newBuildRoot", "host.setBuildRootList",
                                   "host.setBuildRootState"]
    assert hub.call_args("host.newBuildRoot") == [((100, "x86_64"), {"task_id": task_id})]
    assert hub.call_args("host.setBuildRootState")[-1][0] == (broot.id, "EXPIRED")


def test_child_logs_are_unique_per_arch_and_attempt(built):
    tmp, hub, task_id, state, result, broot = built
    assert result["logs"] == [f"hostimage-x86_64-{broot.id}.log",
                              f"compose-x86_64-{broot.id}.log",
                              f"checkout-x86_64-{broot.id}.log"]
    task_log = (hub.task_dir(task_id) / result["logs"][0]).read_text()
    assert "commit " + result["commit"] in task_log
    checkout_log = (hub.task_dir(task_id) / result["logs"][2]).read_text()
    assert "git clone" in checkout_log


def test_a_malformed_treefile_fails_with_its_own_message(plugin, tmp_path, koji_site):
    hub, task_id, state, fault, broot = run_child(plugin, tmp_path, koji_site,
                                                  treefile="broken.yaml")
    assert state == "failed"
    message = fault["faultString"]
    assert "broken.yaml: packages: expected" in message, message
    assert "Traceback" not in message  # the treefile's message, not a stack
    logs = sorted(hub.task_dir(task_id).glob("hostimage-x86_64-*.log"))
    assert len(logs) == 1
    assert message in logs[0].read_text()
    assert broot.expired
    assert not list(hub.task_dir(task_id).glob("*.oci.tar"))


@pytest.mark.parametrize("treefile", ["../../etc/passwd", "/etc/passwd", "a/../../x.yaml"])
def test_a_treefile_outside_the_checkout_is_refused_before_any_work(
        plugin, tmp_path, koji_site, treefile):
    hub = StandinHub(upload_root=tmp_path / "hub", tag_arches="x86_64")
    options = standin_options(tmp_path, topurl=koji_site["topurl"],
                              allowed_scms=koji_site["allowed"])
    params = ["host", "1", "1", "x86_64", dict(TARGET), 10, dict(REPO),
              koji_site["scm_url"], treefile, {}]
    handler = make_handler(plugin.CreateHostImageTask, hub, options, "createHostImage",
                           params)
    state, fault = run_like_kojid(handler)
    assert state == "failed"
    assert "treefile: expected a relative path inside the SCM checkout" in fault["faultString"]
    assert "host.newBuildRoot" not in hub.called()  # refused before any buildroot


def test_a_treefile_symlink_out_of_the_checkout_is_refused(plugin, tmp_path, koji_site):
    hub, task_id, state, fault, broot = run_child(plugin, tmp_path, koji_site,
                                                  treefile="escape.yaml")
    assert state == "failed"
    assert "a symlink leading out of it" in fault["faultString"]
    assert broot.expired


def test_treefile_file_references_must_stay_in_the_checkout(plugin, tmp_path, koji_site):
    # add-files from the builder host would publish its files (kojid.conf, its client
    # certificate) in the image: refused before the buildroot runs anything.
    hub, task_id, state, result, broot = run_child(plugin, tmp_path, koji_site,
                                                   treefile="leak.yaml")
    assert state == "failed"
    assert "add-files" in result["faultString"] and "/etc/hostname" in result["faultString"]
    assert "expected a path inside" in result["faultString"]
    assert broot.mock_calls == []


def test_a_user_base_image_path_is_refused(plugin, tmp_path, koji_site):
    hub = StandinHub(upload_root=tmp_path / "hub", tag_arches="x86_64")
    options = standin_options(tmp_path, topurl=koji_site["topurl"],
                              allowed_scms=koji_site["allowed"])
    params = ["host", "1", "1", "x86_64", dict(TARGET), 10, dict(REPO),
              koji_site["scm_url"], "host.yaml", {"base_image": "oci-archive:/etc/shadow"}]
    handler = make_handler(plugin.CreateHostImageTask, hub, options, "createHostImage",
                           params)
    state, fault = run_like_kojid(handler)
    assert state == "failed"
    assert "base_image: expected a registry reference" in fault["faultString"]
    assert "host.newBuildRoot" not in hub.called()


def test_child_makes_deltas_from_the_previous_tagged_build(plugin, tmp_path, koji_site,
                                                           built):
    """The previous build of the same name in the destination tag (listTagged +
    listArchives) is downloaded from Koji's topurl and becomes a static delta source."""
    _, first_hub, first_task, state, first, _ = built
    assert state == "closed"
    previous = {"build_id": 700, "id": 700, "name": "host", "version": "42.1",
                "release": "3", "nvr": "host-42.1-3", "volume_name": "DEFAULT",
                "state": koji.BUILD_STATES["COMPLETE"]}
    images = koji_site["site"] / "kojifiles" / "packages" / "host" / "42.1" / "3" / "images"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copy(first_hub.task_dir(first_task) / first["archive"], images)

    hub, task_id, state, result, broot = run_child(
        plugin, tmp_path, koji_site, version="42.2", repo_id=101,  # the updated repo
        tagged=[previous],
        archives={700: [{"filename": "host-42.1-3.x86_64.hostimage.json"},
                        {"filename": first["archive"]}]},
    )
    assert state == "closed", result.get("faultString")
    assert hub.call_args("listTagged") == [((TARGET["dest_tag"],), {"package": "host"})]
    assert hub.call_args("listArchives") == [((), {"buildID": 700, "type": "image"})]
    assert f"/kojifiles/packages/host/42.1/3/images/{first['archive']}" in (
        koji_site["requests"].paths)
    manifest = json.loads((hub.task_dir(task_id) / result["manifest"]).read_text())
    assert manifest["commit"] != first["commit"]
    # the compose continued from the previous build's commit (seeded from its archive)
    assert manifest["parent"] == first["commit"]
    assert {"greeter-1.1-1.noarch", "host-release-2-1.noarch"} <= {
        p["nevra"] for p in manifest["packages"]}
    assert [d["from"] for d in manifest["deltas"]] == [first["commit"]]
    # the static delta travels in the archive's repo
    archive = hub.task_dir(task_id) / result["archive"]
    assert any(name.startswith("srv/repo/deltas/") and name.endswith("/superblock")
               for name in _layer_names(archive))


def _layer_names(archive: Path) -> list[str]:
    names = []
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{digest}"))
        for layer in manifest["layers"]:
            blob = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':', 1)[1]}")
            with tarfile.open(fileobj=blob, mode="r:*") as inner:
                names += inner.getnames()
    return names


def _archive_file(archive: Path, member: str) -> bytes:
    """Read ``member`` from the image's layers (the OCI layout inside the tar)."""
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{digest}"))
        for layer in reversed(manifest["layers"]):
            blob = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':', 1)[1]}")
            with tarfile.open(fileobj=blob, mode="r:*") as inner:
                try:
                    return inner.extractfile(member).read()
                except KeyError:
                    continue
    raise AssertionError(f"{member} not in {archive}")


def test_parent_with_a_real_child_end_to_end(plugin, tmp_path, koji_site):
    """hostImageBuild fans out to the real createHostImage (real pipeline) and hands its
    result to completeImageBuild."""
    options = standin_options(tmp_path, topurl=koji_site["topurl"],
                              allowed_scms=koji_site["allowed"])

    def real_child(hub, method, arglist, task_id):
        child = plugin.CreateHostImageTask(task_id, method, arglist, hub, options)
        return child.run()

    hub = StandinHub(upload_root=tmp_path / "hub", tag_arches="x86_64",
                     child_runner=real_child, rpms=koji_site["rpms"])
    params = [TARGET["name"], koji_site["scm_url"], "host.yaml",
              {"engine": "dnf", "version": "7", "delta_from": "none"}]
    handler = make_handler(plugin.HostImageBuildTask, hub, options, "hostImageBuild", params)
    state, result = run_like_kojid(handler)
    assert state == "closed", result
    ((complete_args, _),) = hub.call_args("host.completeImageBuild")
    ((child_id, imgdata),) = complete_args[2].items()
    assert imgdata["task_id"] == int(child_id) and imgdata["arch"] == "x86_64"
    assert imgdata["files"][0] == "host-7-1.x86_64.oci.tar"
    for name in imgdata["files"] + imgdata["logs"]:
        assert (hub.task_dir(int(child_id)) / name).is_file(), name
    # delta_from none: no deltas; the destination tag was still asked for a build to
    # continue from (it has none)
    assert imgdata["rpmlist"] and "listArchives" not in hub.called()
    assert len(hub.call_args("listTagged")) == 1  # for a build to continue from
    assert len(subtasks_of(hub, "tagBuild")) == 1


def test_parent_numbers_the_version_on_from_the_latest_tagged_build(plugin, tmp_path,
                                                                  koji_site):
    # No --version: the treefile's automatic-version-prefix ("1.0") counted on from the
    # latest build in the destination tag, skipping versions Koji already has.
    options = standin_options(tmp_path, topurl=koji_site["topurl"],
                              allowed_scms=koji_site["allowed"])
    latest = {"build_id": 700, "id": 700, "name": "host", "version": "1.0.3", "release": "1",
              "nvr": "host-1.0.3-1", "state": koji.BUILD_STATES["COMPLETE"]}
    taken = dict(latest, id=701, build_id=701, version="1.0.4", nvr="host-1.0.4-1")
    hub = StandinHub(upload_root=tmp_path / "hub", tag_arches="x86_64",
                     child_runner=canned_children(), tagged=[latest],
                     builds={"host-1.0.4-1": taken})
    params = [TARGET["name"], koji_site["scm_url"], "host.yaml", {}]
    handler = make_handler(plugin.HostImageBuildTask, hub, options, "hostImageBuild", params)
    state, result = run_like_kojid(handler)
    assert state == "closed", result
    ((args, _),) = hub.call_args("host.initImageBuild")
    assert (args[1]["version"], args[1]["release"]) == ("1.0.5", "1")
    assert hub.call_args("listTagged") == [((TARGET["dest_tag"],), {"package": "host"})]
    assert [kwargs["arglist"][1] for _, kwargs in subtasks_of(hub)] == ["1.0.5"]


def test_next_build_version_gives_each_build_its_own_version():
    now = datetime.datetime(2026, 12, 2, 9, 0, tzinfo=datetime.UTC)
    free = kojibuild.next_build_version
    assert free({}, None, now, taken=lambda v: False) == "20261202.0"
    assert free({}, "20261202.0", now, taken=lambda v: False) == "20261202.1"
    assert free({}, "20261201.7", now, taken=lambda v: False) == "20261202.0"
    assert free({}, None, now, taken=lambda v: v in {"20261202.0", "20261202.1"}) == \
        "20261202.2"
    keys = {"automatic-version-prefix": "42.<date:%Y%m%d>"}
    assert free(keys, "42.20261202.3", now, taken=lambda v: False) == "42.20261202.4"
    with pytest.raises(KojiBuildError, match="expected versions Koji accepts"):
        free({"automatic-version-prefix": "42", "automatic-version-suffix": "-"}, "42", now,
             taken=lambda v: False)


def test_fault_of_follows_kojid():
    assert fault_of(koji.BuildError("x")) == {"faultCode": koji.BuildError.faultCode,
                                              "faultString": "x"}
    try:
        raise ValueError("y")
    except ValueError as exc:
        fault = fault_of(exc)
    assert fault["faultCode"] == 1
    assert "Traceback" in fault["faultString"] and "ValueError: y" in fault["faultString"]


def test_rebuilding_the_same_source_reproduces_the_image(plugin, tmp_path, built, koji_site):
    # SOURCE_DATE_EPOCH is the SCM commit's time: a second build of the same source and
    # repos, in fresh directories, gives the same commit and the same archive bytes
    first_tmp, first_hub, first_id, state, first, _ = built
    assert state == "closed", first.get("faultString")
    hub, task_id, state, second, _ = run_child(plugin, tmp_path, koji_site)
    assert state == "closed", second.get("faultString")
    assert second["commit"] == first["commit"]
    archive = "host-42.1-3.x86_64.oci.tar"
    assert ((hub.task_dir(task_id) / archive).read_bytes()
            == (first_hub.task_dir(first_id) / archive).read_bytes())
    manifest = json.loads((hub.task_dir(task_id) / second["manifest"]).read_text())
    bare = koji_site["site"] / "scm" / "os" / "config.git"
    commit_time = subprocess.run(["git", "log", "-1", "--format=%ct", "main"], cwd=bare,
                                 check=True, capture_output=True, text=True).stdout.strip()
    assert manifest["source_date_epoch"] == manifest["timestamp"] == int(commit_time)
