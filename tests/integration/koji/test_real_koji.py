# SPDX-License-Identifier: GPL-2.0-or-later
"""Host-image builds through a REAL Koji: kojihub + kojid from an upstream checkout.

Skipped unless ``KOJI_SRC`` names a koji source checkout (scripts/koji-integration.sh
sets everything up and runs this module; docs/testing.md says what runs and what is a
stand-in). kojienv.py starts PostgreSQL, kojihub under Apache with client certificates,
kojid with the hostimage builder plugin (mock replaced by ./mock_standin) and a git daemon;
content.py makes the RPMs. The steps follow docs/koji-admin.md: tags, group, target,
package list, permission, channel, repo; then ``koji hostimage-build`` twice.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

KOJI_SRC = os.environ.get("KOJI_SRC")
if not KOJI_SRC:
    pytest.skip("KOJI_SRC is not set: real-Koji integration run skipped"
                " (scripts/koji-integration.sh)", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the real-Koji integration run needs root (chroot, mounts, postgres user)",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import content  # noqa: E402
import kojienv  # noqa: E402
from kojienv import ADMIN, BUILDER, USER, KojiEnv  # noqa: E402

from koji_hostimage.example.content import ExtraPackage, build_example_content  # noqa: E402
from koji_hostimage.image.oci_reader import OciArchive  # noqa: E402
from koji_hostimage.ostree.repo import OSTreeRepo  # noqa: E402

pytestmark = pytest.mark.timeout(3600)

PREFIX = "hi-it"
BUILD_TAG = f"{PREFIX}-build"
DEST_TAG = f"{PREFIX}-candidate"
TARGET = PREFIX
GROUP = "hostimage-build"
IMAGE_NAME = "host"  # the treefile's file name without .yaml (the plugin's default_name)
ARCH = KojiEnv.arch()
BUILD_TIMEOUT = 1800


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KojiEnv]:
    koji_env = KojiEnv(Path(KOJI_SRC), tag_prefix=PREFIX)
    try:
        koji_env.start()
        yield koji_env
    except BaseException:
        _dump_logs(koji_env)
        raise
    finally:
        koji_env.close()


def _dump_logs(env: KojiEnv) -> None:
    for name in ("httpd-error.log", "kojid.log", "kojira.log", "git-daemon.log"):
        print(f"===== {name} (tail)\n{env.log(name, 150)}")


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What the ordered tests below hand on to each other."""
    return {}


def call(env: KojiEnv, method: str, *args: str, user: str = ADMIN) -> Any:
    """``koji call --json-output METHOD ARGS`` (the hub API through the stock CLI)."""
    out = env.koji(["call", "--json-output", method, *args], user=user).stdout
    return json.loads(out) if out.strip() else None


def import_rpms(env: KojiEnv, rpms: list[Path], known: set[str]) -> list[str]:
    """``koji import --create-build`` the RPMs whose build is new; returns their NVRs."""
    new = [rpm for rpm in rpms if _nvr_of(rpm) not in known]
    if new:
        env.koji(["import", "--create-build", *new])
    return sorted({_nvr_of(rpm) for rpm in new})


def _nvr_of(rpm: Path) -> str:
    out = kojienv.run(["rpm", "-qp", "--qf", "%{SOURCERPM}", rpm]).stdout.strip()
    return out.removesuffix(".src.rpm")


def setup_tags(env: KojiEnv, v1: content.ExampleContent) -> None:
    """docs/koji-admin.md section 4, with the test RPMs as the build tag's content."""
    k = env.koji
    # mock.new_chroot left unset: mock's default systemd-nspawn chroot, the one rpm-ostree
    # needs (the plugin refuses the rpm-ostree engine with mock.new_chroot=0)
    k(["add-tag", BUILD_TAG, "--arches", ARCH])
    k(["add-group", BUILD_TAG, GROUP])
    # With the mock stand-in the tools come from the host; the group must still resolve
    # in the tag's repo (the stand-in installs it into the buildroot's rpmdb).
    k(["add-group-pkg", BUILD_TAG, GROUP, "host-filesystem", "host-shadow"])
    k(["add-tag", DEST_TAG])
    k(["add-target", TARGET, BUILD_TAG, DEST_TAG])
    srpm_names = sorted({_nvr_of(rpm).rsplit("-", 2)[0] for rpm in v1.rpms} | {"early-user"})
    k(["add-pkg", "--owner", ADMIN, BUILD_TAG, *srpm_names])
    k(["add-pkg", "--owner", USER, DEST_TAG, IMAGE_NAME])


def tag_and_regen(env: KojiEnv, nvrs: list[str]) -> None:
    if nvrs:
        env.koji(["tag-build", "--wait", BUILD_TAG, *nvrs])  # tagBuild tasks, run by kojid
    # koji >= 1.35: a repo request, which kojira turns into a newRepo task (createrepo
    # channel) and kojid runs; the CLI waits for the repo.
    env.koji(["regen-repo", "--wait", BUILD_TAG])


def commit_treefile(env: KojiEnv, work: Path, v: content.ExampleContent, message: str) -> str:
    content.write_treefile(v, work / "host.yaml")
    return env.git_commit(work, message)


def hostimage_build(env: KojiEnv, scm_url: str, *options: str, treefile: str = "host.yaml",
                    expect_failure: bool = False) -> tuple[int, str]:
    """``koji hostimage-build`` as the user; returns (task id, CLI output)."""
    proc = env.koji(["hostimage-build", "--wait", "--arch", ARCH, *options, TARGET, scm_url,
                     treefile], user=USER, check=False, timeout=BUILD_TIMEOUT)
    output = proc.stdout + proc.stderr
    match = re.search(r"Created task: (\d+)", output)
    assert match, f"no task created:\n{output}"
    task_id = int(match.group(1))
    if expect_failure:
        assert proc.returncode != 0, f"hostimage-build should have failed:\n{output}"
    elif proc.returncode != 0:
        pytest.fail(f"hostimage-build failed (exit {proc.returncode}):\n{output}\n"
                    f"{_task_report(env, task_id)}", pytrace=False)
    return task_id, output


def _task_report(env: KojiEnv, parent: int) -> str:
    """The failed tasks' results and logs, for the failure message."""
    lines = [env.koji(["taskinfo", "-v", "-r", str(parent)], check=False).stdout]
    children = call(env, "getTaskChildren", str(parent)) or []
    for task in [{"id": parent}, *children]:
        result = env.koji(["call", "getTaskResult", str(task["id"])], check=False)
        lines.append(f"--- task {task['id']} result:\n{result.stdout}{result.stderr}")
        for name in call(env, "listTaskOutput", str(task["id"])) or []:
            if name.endswith(".log"):
                text = _fetch(env, f"work/tasks/{task['id'] % 10000}/{task['id']}/{name}")
                lines.append(f"--- task {task['id']} {name} (tail):\n"
                             + "\n".join(text.decode(errors="replace").splitlines()[-60:]))
    return "\n".join(lines)


def _fetch(env: KojiEnv, relpath: str) -> bytes:
    try:
        with urllib.request.urlopen(f"{env.topurl}/{relpath}", timeout=60) as resp:
            return resp.read()
    except OSError as exc:
        return f"({relpath}: {exc})".encode()


def build_of_task(env: KojiEnv, task_id: int) -> dict[str, Any]:
    builds = call(env, "listBuilds", f"taskID={task_id}")
    assert builds, f"task {task_id} made no build"
    return builds[0]


def image_files(env: KojiEnv, build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    archives = call(env, "listArchives", f"buildID={build['build_id']}", "type=image")
    return {a["filename"]: a for a in archives}


def image_url(env: KojiEnv, build: dict[str, Any], filename: str) -> str:
    # koji.PathInfo.imagebuild: packages/NAME/VERSION/RELEASE/images
    return (f"packages/{build['name']}/{build['version']}/{build['release']}/images/"
            f"{filename}")


def manifest_of(env: KojiEnv, build: dict[str, Any]) -> dict[str, Any]:
    name = f"{build['nvr']}.{ARCH}.hostimage.json"
    return json.loads(_fetch(env, image_url(env, build, name)))


def passwd_entry(env: KojiEnv, build: dict[str, Any], tmp: Path, user: str) -> list[str]:
    """The ``user`` line of the image's /usr/etc/passwd (the dnf engine's reshape moves
    /etc to /usr/etc), read from the OSTree commit inside the OCI archive."""
    name = f"{build['nvr']}.{ARCH}.oci.tar"
    archive = tmp / name
    archive.write_bytes(_fetch(env, image_url(env, build, name)))
    repo_dir = tmp / f"{build['nvr']}-repo"
    with OciArchive(archive) as image:
        image.extract_content(repo_dir)
    manifest = manifest_of(env, build)
    text = OSTreeRepo(repo_dir).cat(manifest["commit"], "/usr/etc/passwd")
    for line in text.splitlines():
        if line.startswith(f"{user}:"):
            return line.split(":")
    raise AssertionError(f"{build['nvr']}: no {user} in /usr/etc/passwd:\n{text}")


# ------------------------------------------------------------------------------- tests


def test_setup_tags_and_repo(env: KojiEnv, state: dict[str, Any],
                             tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("koji-content")
    v1 = content.build_content(base / "v1", v2=False)
    setup_tags(env, v1)
    nvrs = import_rpms(env, v1.rpms, set())
    tag_and_regen(env, nvrs)
    repo = call(env, "getRepo", BUILD_TAG)
    assert repo and repo["state"] == 1, f"no READY repo for {BUILD_TAG}: {repo}"
    comps = _fetch(env, f"repos/{BUILD_TAG}/{repo['id']}/groups/comps.xml")
    assert GROUP.encode() in comps
    state.update(base=base, v1=v1, known=set(nvrs))
    assert "hostImageBuild" in env.koji(["list-api"]).stdout, "hub plugin not loaded"
    assert BUILDER in env.koji(["list-hosts", "--channel", "image", "--quiet"]).stdout


def test_first_build(env: KojiEnv, state: dict[str, Any]) -> None:
    if "v1" not in state:
        pytest.skip("setup failed")
    work = env.git_repo("hostimage-config")
    commit = commit_treefile(env, work, state["v1"], "v1")
    task_id, _ = hostimage_build(env, env.scm_url(work, commit))
    build = build_of_task(env, task_id)
    state.update(work=work, build1=build, task1=task_id)
    assert build["state"] == 1, build  # COMPLETE
    info = env.koji(["buildinfo", build["nvr"]]).stdout
    files = image_files(env, build)
    for suffix in (".oci.tar", ".hostimage.json"):
        name = f"{build['nvr']}.{ARCH}{suffix}"
        assert name in files, f"{name} not among the build's archives: {sorted(files)}"
        assert name in info, f"koji buildinfo does not list {name}:\n{info}"
    tagged = call(env, "listTagged", DEST_TAG)
    assert build["nvr"] in [b["nvr"] for b in tagged], f"{build['nvr']} not in {DEST_TAG}"
    manifest = manifest_of(env, build)
    assert manifest["commit"], manifest
    state["manifest1"] = manifest


def test_first_build_rpmlist_has_payload_hashes(env: KojiEnv, state: dict[str, Any]) -> None:
    """The image's rpmlist must carry each RPM's real payload hash (sigmd5), as kojid's own
    BuildRoot.getPackageList sends it (koji_hostimage.koji.builder.rpmlist_from_manifest
    sent empty hashes before; this guards the fix)."""
    if "build1" not in state:
        pytest.skip("first build failed")
    build = state["build1"]
    archive = image_files(env, build)[f"{build['nvr']}.{ARCH}.oci.tar"]
    koji_rpms = call(env, "listRPMs", f"imageID={archive['id']}")
    manifest = state["manifest1"]
    expected = {f"{p['name']}-{p['version']}-{p['release']}.{p['arch']}"
                for p in manifest["packages"]}
    listed = {f"{r['nvr']}.{r['arch']}": r for r in koji_rpms}
    assert set(listed) == expected
    children = call(env, "getTaskChildren", str(state["task1"]))
    child = next(t for t in children if t["method"] == "createHostImage")
    result = call(env, "getTaskResult", str(child["id"]))
    empty = [e["name"] for e in result["rpmlist"] if not e.get("payloadhash")]
    assert not empty, f"rpmlist entries with an empty payloadhash: {empty}"
    for entry in result["rpmlist"]:
        nvra = f"{entry['name']}-{entry['version']}-{entry['release']}.{entry['arch']}"
        assert entry["payloadhash"] == listed[nvra]["payloadhash"], nvra


def test_second_build_delta_and_stable_uid(env: KojiEnv, state: dict[str, Any],
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """v2 (greeter 1.1, host-release 2, host-svc 1.1 needing early-user first): the
    manifest lists a static delta from build 1's commit, and hostsvc keeps its UID/GID
    (the dnf engine carries passwd/group over from the previous commit)."""
    if "build1" not in state:
        pytest.skip("first build failed")
    v2 = content.build_content(state["base"] / "v2", v2=True)
    nvrs = import_rpms(env, v2.rpms, state["known"] | {_nvr_of(r) for r in state["v1"].rpms})
    assert "greeter-1.1-1" in nvrs and "host-svc-1.1-1" in nvrs, nvrs
    tag_and_regen(env, nvrs)
    commit = commit_treefile(env, state["work"], v2, "v2")
    task_id, _ = hostimage_build(env, env.scm_url(state["work"], commit))
    build2 = build_of_task(env, task_id)
    assert build2["state"] == 1, build2
    manifest2 = manifest_of(env, build2)
    first_commit = state["manifest1"]["commit"]
    froms = [d.get("from") for d in manifest2.get("deltas", [])]
    assert first_commit in froms, f"no delta from {first_commit} in {manifest2.get('deltas')}"
    tmp = tmp_path_factory.mktemp("images")
    user1 = passwd_entry(env, state["build1"], tmp, content.SYSTEM_USER)
    user2 = passwd_entry(env, build2, tmp, content.SYSTEM_USER)
    assert user2[2:4] == user1[2:4], (
        f"{content.SYSTEM_USER} UID/GID changed between builds: {user1} -> {user2}"
    )
    # the compose continued from build 1's commit, and numbered its version on from it
    assert manifest2["parent"] == first_commit
    assert manifest2["version"] == build2["version"] != state["build1"]["version"]
    state.update(v2=v2, build2=build2)


def test_packages_koji_does_not_know_fail_before_upload_but_not_scratch(
        env: KojiEnv, state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    """A --repo with a package Koji has never seen: the non-scratch build fails right
    after the compose with the list (kojihub's import would refuse it only after the
    upload); a scratch build of the same is fine. --use-buildroot-repo keeps the build
    tag's repo for everything else."""
    if "v2" not in state:
        pytest.skip("second build failed")
    extra = build_example_content(
        tmp_path_factory.mktemp("outsider"), omit=[],
        extra_specs=[ExtraPackage("outsider", files={"/usr/share/outsider": "x\n"})])
    served = env.topdir / "outsider"
    served.mkdir()
    for rpm in extra.repo_dir.glob("outsider-*.rpm"):
        (served / rpm.name).write_bytes(rpm.read_bytes())
    kojienv.run(["createrepo_c", "-q", served])
    data = yaml.safe_load((state["work"] / "host.yaml").read_text())
    data["packages"] = [*data["packages"], "outsider"]
    (state["work"] / "outsider.yaml").write_text(yaml.safe_dump(data))
    commit = env.git_commit(state["work"], "outsider")
    url = env.scm_url(state["work"], commit)
    # --name: the image name otherwise comes from the treefile (outsider)
    options = ("--name", IMAGE_NAME, "--repo", f"{env.topurl}/outsider/",
               "--use-buildroot-repo")
    task_id, output = hostimage_build(env, url, *options, treefile="outsider.yaml",
                                      expect_failure=True)
    assert "1 package(s) Koji does not know: outsider-1.0-1.noarch" in output, output
    build = build_of_task(env, task_id)
    assert build["state"] == 3, build  # FAILED
    assert not image_files(env, build), "a failed build must not have image archives"
    children = call(env, "getTaskChildren", str(task_id))
    child = next(t for t in children if t["method"] == "createHostImage")
    uploaded = call(env, "listTaskOutput", str(child["id"])) or []
    assert not [name for name in uploaded if name.endswith(".oci.tar")], uploaded
    hostimage_build(env, url, "--scratch", *options, treefile="outsider.yaml")
