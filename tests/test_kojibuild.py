# SPDX-License-Identifier: GPL-2.0-or-later
"""koji_hostimage.koji: the builder's decisions (builder, previous, config) and the
buildroot runner.

The runner tests use tests/kojid_standin.py's StandinBuildRoot, a STAND-IN for kojid's
BuildRoot (no mock): it runs the commands for real on this host below a temporary root.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import koji
import pytest
from httptools import static_server
from kojid_standin import StandinBuildRoot, StandinHub, standin_options

from koji_hostimage.errors import CommandError, HostImageError, KojiBuildError
from koji_hostimage.koji import builder as kojibuild
from koji_hostimage.koji import config as builder_config
from koji_hostimage.koji import previous
from koji_hostimage.koji import rpmlist as rpmlist_mod
from koji_hostimage.koji.buildroot import BuildrootError, BuildrootRunner, exit_code
from koji_hostimage.koji.options import with_defaults
from koji_hostimage.manifest import HostImageManifest, Package, Source
from koji_hostimage.pipeline import BuildResult
from koji_hostimage.runner import run_checked

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPLETE = koji.BUILD_STATES["COMPLETE"]


# ------------------------------------------------------------------------------ arches


def test_tag_arches_canonicalises_and_refuses_an_empty_tag():
    assert kojibuild.tag_arches({"name": "t", "arches": "i686 x86_64 i386"}) == [
        "i386", "x86_64"
    ]
    with pytest.raises(KojiBuildError, match="build tag 't': arches: expected"):
        kojibuild.tag_arches({"name": "t", "arches": ""})


def test_plan_arches_defaults_to_the_tag_and_intersects_a_request():
    assert kojibuild.plan_arches(["x86_64", "aarch64"]).arches == ("x86_64", "aarch64")
    plan = kojibuild.plan_arches(["x86_64", "aarch64"], ["s390x", "aarch64", "aarch64"],
                                 ["aarch64", "s390x"])
    assert plan.arches == ("aarch64",)
    assert plan.dropped == ("s390x",)
    assert plan.failable == ("aarch64",)  # s390x is not built, so it cannot "fail"
    assert plan.is_failable("aarch64") and not plan.is_failable("x86_64")


def test_plan_arches_with_nothing_left_names_both_lists():
    with pytest.raises(KojiBuildError) as info:
        kojibuild.plan_arches(["x86_64"], ["ppc64le", "s390x"])
    assert "x86_64" in str(info.value) and "ppc64le, s390x" in str(info.value)


def test_all_failed_and_failed_arches():
    fault = {"faultCode": 1000, "faultString": "boom"}
    ok = {"arch": "x86_64", "task_id": 1}
    assert kojibuild.all_failed({1: fault, 2: dict(fault)})
    assert not kojibuild.all_failed({1: fault, 2: ok})
    assert kojibuild.failed_arches({"x86_64": 2, "aarch64": 1}, {1: fault, 2: ok}) == [
        "aarch64"
    ]


# ------------------------------------------------------------------------------ names


def test_upload_names_are_unique_per_arch_and_attempt():
    a = kojibuild.upload_names("host-1-2", "x86_64", 42)
    b = kojibuild.upload_names("host-1-2", "aarch64", 42)
    retry = kojibuild.upload_names("host-1-2", "x86_64", 43)
    assert a.archive == "host-1-2.x86_64.oci.tar"
    assert a.files == ["host-1-2.x86_64.oci.tar", "host-1-2.x86_64.hostimage.json",
                       "host-1-2.x86_64.compose.json"]
    # Every arch imports into one image directory: no two arches share a name.
    assert not set(a.files + a.logs) & set(b.files + b.logs)
    # A retried task keeps the first attempt's logs.
    assert not set(a.logs) & set(retry.logs)
    assert all(name.endswith(".log") for name in a.logs)


def test_default_name_and_repo_urls():
    assert kojibuild.default_name("config/host.yaml") == "host"
    assert kojibuild.default_name("fcos.json") == "fcos"
    assert kojibuild.default_name("plain") == "plain"
    assert kojibuild.substitute_arch("http://x/$basearch/os/$arch", "aarch64") == (
        "http://x/aarch64/os/aarch64"
    )
    assert kojibuild.koji_repo_url("http://koji/kojifiles", 100, "f42-build", "x86_64") == (
        "http://koji/kojifiles/repos/f42-build/100/x86_64"
    )


def test_fetch_base_image_sources(tmp_path):
    """The configured base image may be a local OCI archive (used in place); a user's may
    not; a registry reference is copied with skopeo (here one that cannot answer: the
    error names the command)."""
    assert kojibuild.fetch_base_image(None, None, "x86_64", tmp_path) is None
    config_ref = "oci-archive:/srv/base.oci.tar:latest"
    assert kojibuild.fetch_base_image(None, config_ref, "x86_64", tmp_path) == Path(
        "/srv/base.oci.tar"
    )
    with pytest.raises(KojiBuildError, match="local paths are only allowed"):
        kojibuild.fetch_base_image("dir:/srv/image", config_ref, "x86_64", tmp_path)
    with pytest.raises(CommandError, match="skopeo copy") as info:
        kojibuild.fetch_base_image("docker://127.0.0.1:9/none:1", None, "aarch64", tmp_path)
    assert "--override-arch arm64" in str(info.value)  # the OCI name of the Koji arch
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ rpmlist


def _manifest(packages: list[Package]) -> HostImageManifest:
    return HostImageManifest(
        name="host", version="1", release="1", arch="x86_64", ref="r", commit="c" * 64,
        parent=None, content_checksum=None, timestamp=0, inputhash="i", engine="dnf",
        packages=packages, object_count=1, object_bytes=1,
    )


def test_treefile_paths_must_stay_in_the_checkout(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "host.yaml").write_text("ref: x\n")
    (tmp_path / "escape.yaml").symlink_to("/etc/hostname")
    assert kojibuild.treefile_in_checkout(tmp_path, "sub/../sub/host.yaml") == (
        tmp_path / "sub" / "host.yaml")
    for bad in ("/etc/host.yaml", "..", "../x.yaml", "sub/../../x.yaml"):
        with pytest.raises(KojiBuildError, match="inside the SCM checkout"):
            kojibuild.check_treefile_path(bad)
    with pytest.raises(KojiBuildError, match="a symlink leading out of it"):
        kojibuild.treefile_in_checkout(tmp_path, "escape.yaml")


def test_base_image_source_prefers_the_user_and_refuses_their_local_paths():
    assert kojibuild.base_image_source(None, None) is None
    assert kojibuild.base_image_source("", "oci-archive:/srv/b.oci.tar:latest") == Path(
        "/srv/b.oci.tar")
    assert kojibuild.base_image_source(None, "dir:/srv/image") == "dir:/srv/image"
    assert kojibuild.base_image_source("docker://r/x:1", "oci-archive:/srv/b.tar") == (
        "docker://r/x:1")
    for local in ("oci-archive:/etc/shadow", "oci:/x", "docker-archive:/x", "dir:/x"):
        with pytest.raises(KojiBuildError, match="local paths are only allowed"):
            kojibuild.base_image_source(local, None)


def test_rpmlist_has_every_field_add_external_rpm_checks_with_its_type():
    manifest = _manifest([Package("zlib", None, "1.3", "1", "x86_64"),
                          Package("bash", 2, "5.2", "3", "x86_64")])
    rpmlist = rpmlist_mod.rpmlist_from_manifest(manifest)
    assert [r["name"] for r in rpmlist] == ["bash", "zlib"]
    # kojihub.add_external_rpm's dtypes
    types = {"name": str, "version": str, "release": str, "epoch": (int, type(None)),
             "arch": str, "payloadhash": str, "size": int, "buildtime": int}
    for entry in rpmlist:
        for key, kind in types.items():
            assert isinstance(entry[key], kind), (key, entry)
    assert rpmlist[0]["epoch"] == 2 and rpmlist[1]["epoch"] is None


def test_task_result_shape():
    names = kojibuild.upload_names("host-1-1", "x86_64", 7)
    result = kojibuild.task_result(
        task_id=11, arch="x86_64", name="host", version="1", release="1", names=names,
        files=names.files[:2], logs=[names.task_log], rpmlist=[],
        manifest=_manifest([]),
    )
    assert result["arch"] == "x86_64" and result["task_id"] == 11
    assert result["files"] == names.files[:2] and result["logs"] == [names.task_log]
    assert result["commit"] == "c" * 64
    assert None not in result.values()  # XML-RPC safe


# ------------------------------------------------------------------------------ deltas


def test_delta_plan():
    assert previous.delta_plan(None, 2) == previous.DeltaPlan(count=2)
    assert previous.delta_plan("none", 2) == previous.DeltaPlan()
    assert previous.delta_plan(0, 2).count == 0
    assert previous.delta_plan(["a-1-1", "a-1-1", "a-2-1"], 2).nvrs == ("a-1-1", "a-2-1")
    for bad in (True, 11, -1, "all", [1]):
        with pytest.raises(KojiBuildError, match="delta_from"):
            previous.delta_plan(bad, 1)


def test_pick_previous_builds_newest_complete_same_name_not_itself():
    tagged = [
        {"build_id": 3, "name": "host", "nvr": "host-1-3", "state": COMPLETE},
        {"build_id": 5, "name": "host", "nvr": "host-1-5", "state": COMPLETE},
        {"build_id": 4, "name": "host", "nvr": "host-1-4",
         "state": koji.BUILD_STATES["DELETED"]},
        {"build_id": 9, "name": "other", "nvr": "other-1-9", "state": COMPLETE},
        {"build_id": 6, "name": "host", "nvr": "host-1-6", "state": COMPLETE},
        {"build_id": 5, "name": "host", "nvr": "host-1-5", "state": COMPLETE},  # inherited
    ]
    picked = previous.pick_previous_builds(tagged, "host", 2, exclude_nvr="host-1-6")
    assert [b["nvr"] for b in picked] == ["host-1-5", "host-1-3"]
    assert previous.pick_previous_builds(tagged, "host", 0) == []


def test_pick_archive_and_url():
    archives = [{"filename": "host-1-1.aarch64.oci.tar"},
                {"filename": "host-1-1.x86_64.hostimage.json"},
                {"filename": "host-1-1.x86_64.oci.tar"}]
    assert previous.pick_archive(archives, "x86_64")["filename"] == "host-1-1.x86_64.oci.tar"
    assert previous.pick_archive(archives, "s390x") is None
    build = {"name": "host", "version": "1", "release": "1", "volume_name": "DEFAULT"}
    assert previous.previous_archive_url("http://k/files", build, "a.tar") == (
        "http://k/files/packages/host/1/1/images/a.tar"
    )


def _previous_build(build_id: int, nvr: str) -> dict:
    name, version, release = nvr.rsplit("-", 2)
    return {"build_id": build_id, "id": build_id, "name": name, "version": version,
            "release": release, "nvr": nvr, "volume_name": "DEFAULT", "state": COMPLETE}


def test_previous_builds_from_topdir_skip_a_pruned_tagged_build(tmp_path):
    """The latest tagged builds come from the builder's topdir when it has no topurl; a
    tagged build without an archive for the arch is skipped, not fatal. The latest one
    is also the seed, fetched once, even without deltas. The hub is the STAND-IN session
    of tests/kojid_standin.py (recording calls)."""
    topdir = tmp_path / "koji"
    images = topdir / "packages" / "host" / "2" / "1" / "images"
    images.mkdir(parents=True)
    (images / "host-2-1.x86_64.oci.tar").write_bytes(b"archive v2")
    hub = StandinHub(
        upload_root=tmp_path / "hub",
        tagged=[_previous_build(701, "host-2-1"), _previous_build(700, "host-1-1")],
        archives={701: [{"filename": "host-2-1.x86_64.oci.tar"}],
                  700: [{"filename": "host-1-1.aarch64.oci.tar"}]},
    )
    common = dict(name="host", dest_tag=20, arch="x86_64", exclude_nvr="host-3-1",
                  dest=tmp_path / "previous", topurl=None, topdir=str(topdir))
    found = previous.previous_builds(hub, previous.DeltaPlan(count=2), **common)
    assert found.deltas == [images / "host-2-1.x86_64.oci.tar"]
    assert found.seed == images / "host-2-1.x86_64.oci.tar"
    assert hub.call_args("listTagged") == [((20,), {"package": "host"})]
    assert [kwargs["buildID"] for _, kwargs in hub.call_args("listArchives")] == [701, 700]
    hub.calls.clear()
    found = previous.previous_builds(hub, previous.DeltaPlan(), **common)
    assert (found.seed, found.deltas) == (images / "host-2-1.x86_64.oci.tar", [])
    assert [kwargs["buildID"] for _, kwargs in hub.call_args("listArchives")] == [701]
    assert previous.latest_version(hub, 20, "host") == "2"
    assert previous.latest_version(hub, 20, "other") is None


def test_previous_builds_named_by_nvr_must_all_be_there(tmp_path):
    hub = StandinHub(upload_root=tmp_path / "hub",
                     builds={"host-1-1": _previous_build(700, "host-1-1")},
                     archives={700: [{"filename": "host-1-1.aarch64.oci.tar"}]})
    with pytest.raises(KojiBuildError, match=r"host-1-1: expected an archive ending "
                       r"\.x86_64\.oci\.tar, got host-1-1\.aarch64\.oci\.tar"):
        previous.previous_builds(
            hub, previous.DeltaPlan(nvrs=("host-1-1",)), name="host", dest_tag=20,
            arch="x86_64", exclude_nvr="host-2-1", dest=tmp_path / "previous",
            topurl=None, topdir=str(tmp_path),
        )


def test_download_over_real_http_and_a_404(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "blob").write_bytes(os.urandom(3 << 20))
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    with static_server(served) as (base, requests):
        got = previous.download(f"{base}/blob", dest_dir / "blob")
        assert got.read_bytes() == (served / "blob").read_bytes()
        with pytest.raises(KojiBuildError, match="expected HTTP 200, got 404"):
            previous.download(f"{base}/missing", dest_dir / "missing")
    assert sorted(p.name for p in dest_dir.iterdir()) == ["blob"]  # no partial file left
    assert "/blob" in requests.paths


def _build_result(tmp_path, changed=True):
    files = {}
    for suffix in ("oci.tar", "hostimage.json"):
        files[suffix] = tmp_path / f"host-1-1.x86_64.{suffix}"
        files[suffix].write_text(suffix)
    manifest = HostImageManifest(
        name="host", version="1", release="1", arch="x86_64", ref="os/x86_64", commit="c" * 64,
        parent=None, content_checksum=None, timestamp=0, inputhash="i" * 64, engine="dnf",
        packages=[], object_count=1, object_bytes=1,
    )
    return BuildResult(changed=changed, commit="c" * 64, log_path=None,
                       archive=files["oci.tar"] if changed else None,
                       manifest=manifest if changed else None,
                       manifest_path=files["hostimage.json"] if changed else None,
                       compose_json_path=tmp_path / "absent.compose.json")


def test_output_uploads_name_what_exists_and_refuse_an_unchanged_compose(tmp_path):
    names = kojibuild.upload_names("host-1-1", "x86_64", 42)
    uploads = kojibuild.output_uploads(_build_result(tmp_path), names, "host-1-1 x86_64")
    assert uploads == [(tmp_path / "host-1-1.x86_64.oci.tar", names.archive),
                       (tmp_path / "host-1-1.x86_64.hostimage.json", names.manifest)]
    with pytest.raises(KojiBuildError, match="host-1-1 x86_64: the compose found nothing"):
        kojibuild.output_uploads(_build_result(tmp_path, changed=False), names, "host-1-1 x86_64")


def test_task_log_collects_plugin_and_library_messages_then_lets_go(tmp_path):
    path = tmp_path / "task.log"
    with kojibuild.task_log(path):
        logging.getLogger("koji.plugin.hostimage").info("checking out %s", "scm")
        logging.getLogger("koji_hostimage.pipeline").warning("compose slow")
        logging.getLogger("elsewhere").error("not ours")
    logging.getLogger("koji_hostimage.pipeline").warning("after the task")
    text = path.read_text()
    assert "INFO koji.plugin.hostimage: checking out scm" in text
    assert "WARNING koji_hostimage.pipeline: compose slow" in text
    assert "not ours" not in text and "after the task" not in text
    names = kojibuild.upload_names("host-1-1", "x86_64", 7)
    work = tmp_path / "work"
    work.mkdir()
    (work / "compose.log").write_text("")  # empty: not uploaded
    assert kojibuild.log_uploads(names, path, work) == [(path, "hostimage-x86_64-7.log")]
    (work / "compose.log").write_text("rpm-ostree compose tree ...\n")
    assert kojibuild.log_uploads(names, path, work)[1] == (work / "compose.log",
                                                           "compose-x86_64-7.log")


def test_build_request_takes_opts_over_the_builder_config(tmp_path):
    config = builder_config.BuilderConfig(engine="rpm-ostree", sign_key="0xCONFIG",
                                          server_cmd=["httpd", "-f"])
    common = dict(config=config, treefile=tmp_path / "host.yaml", output_dir=tmp_path / "o",
                  workdir=tmp_path / "w", arch="aarch64", name="host", version="1",
                  release=3, koji_repo="http://koji/repos/build/100/aarch64", previous=[],
                  base_image=None, source=Source(scm_url="git+https://s/r.git#main"),
                  runner=None)
    request = kojibuild.build_request(opts=with_defaults({}), **common)
    assert (request.engine, request.sign_key, request.release) == ("rpm-ostree", "0xCONFIG", "3")
    assert request.extra_repos == ["http://koji/repos/build/100/aarch64"]
    assert request.server_cmd == ["httpd", "-f"] and request.server_cmd is not config.server_cmd
    opts = with_defaults({"engine": "dnf", "sign_key": "0xUSER",
                          "repo": ["http://mirror/$arch/os", "http://other/$basearch"]})
    request = kojibuild.build_request(opts=opts, **common)
    assert (request.engine, request.sign_key) == ("dnf", "0xUSER")
    # given repos replace the build tag's (koji's kiwi plugin: use_buildroot_repo)
    assert request.extra_repos == ["http://mirror/aarch64/os", "http://other/aarch64"]
    opts["use_buildroot_repo"] = True
    assert kojibuild.build_request(opts=opts, **common).extra_repos == [
        "http://mirror/aarch64/os", "http://other/aarch64", "http://koji/repos/build/100/aarch64"]


@pytest.mark.parametrize(("user_repos", "use_buildroot_repo", "expected"), [
    ([], None, ["TAG"]),
    ([], True, ["TAG"]),
    ([], False, []),  # only the treefile's own repos
    (["http://c/$arch"], None, ["http://c/s390x"]),
    (["http://c/$arch"], False, ["http://c/s390x"]),
    (["http://c/$basearch"], True, ["http://c/s390x", "TAG"]),
])
def test_compose_repos_use_the_build_tag_repo_only_by_default_or_when_asked(
        user_repos, use_buildroot_repo, expected):
    assert kojibuild.compose_repos("TAG", user_repos, "s390x", use_buildroot_repo) == expected


@pytest.mark.parametrize(("extra", "engine", "refused"), [
    ({}, "rpm-ostree", False),  # unset: mock's default, systemd-nspawn
    ({"mock.new_chroot": 1}, "rpm-ostree", False),
    ({"mock.new_chroot": True}, "rpm-ostree", False),
    ({"mock.new_chroot": 0}, "rpm-ostree", True),
    ({"mock.new_chroot": False}, "rpm-ostree", True),
    ({"mock.new_chroot": "0"}, "rpm-ostree", True),
    ({"mock.new_chroot": 0}, "dnf", False),  # no bubblewrap in the dnf engine
])
def test_rpm_ostree_is_refused_in_mocks_plain_chroot(extra, engine, refused):
    buildconfig = {"name": "f42-hostimage-build", "extra": extra}
    if not refused:
        kojibuild.check_chroot_mode(buildconfig, engine)
        return
    with pytest.raises(KojiBuildError) as info:
        kojibuild.check_chroot_mode(buildconfig, engine)
    message = str(info.value)
    assert "build tag f42-hostimage-build: extra mock.new_chroot" in message
    assert "Failed to make / slave" in message
    assert "koji edit-tag f42-hostimage-build --remove-extra=mock.new_chroot" in message


def _rpm(name, **extra):
    return {"name": name, "version": "1", "release": "1", "arch": "noarch", "epoch": None,
            "payloadhash": f"{name:0>32}"[:32], "size": 1, "buildtime": 1, **extra}


def test_mark_external_rpms_lists_every_rpm_without_an_origin():
    calls = []
    origins = {"a-1-1.noarch": "internal", "c-1-1.noarch": {"external_repo_id": 7},
               "e-1-1.noarch": "internal"}

    def mark(rpmlist):  # builder/kojid BuildRoot.markExternalRPMs's walk
        calls.append([r["name"] for r in rpmlist])
        for info in rpmlist:
            key = rpmlist_mod.nvra(info)
            if key not in origins:
                raise koji.BuildError(f"No origin for {key}")
            if origins[key] != "internal":
                info["location"] = origins[key]["external_repo_id"]

    rpmlist = [_rpm(n) for n in "abcde"]
    assert rpmlist_mod.mark_external_rpms(mark, rpmlist) == ["b-1-1.noarch", "d-1-1.noarch"]
    assert calls == [list("abcde"), list("cde"), ["e"]]
    assert [r.get("location") for r in rpmlist] == [None, None, 7, None, None]


def test_mark_external_rpms_passes_other_errors_through():
    def mark(rpmlist):
        raise koji.GenericError("connection refused")

    with pytest.raises(koji.GenericError, match="connection refused"):
        rpmlist_mod.mark_external_rpms(mark, [_rpm("a")])


def test_unknown_rpms_asks_the_hub_for_internal_rpms_only():
    known = {"a": _rpm("a", external_repo_id=0),
             "b": _rpm("b", external_repo_id=0, payloadhash="f" * 32),
             "x": _rpm("x", external_repo_id=3, payloadhash="e" * 32)}
    asked = []

    def lookup(queries):
        asked.extend(q["name"] for q in queries)
        assert all(set(q) == {"name", "version", "release", "arch"} for q in queries)
        return [known.get(q["name"]) for q in queries]

    rpmlist = [_rpm("a"), _rpm("b"), _rpm("c"), _rpm("ext", location=3), _rpm("x")]
    missing, mismatched = rpmlist_mod.unknown_rpms(rpmlist, lookup)
    assert asked == ["a", "b", "c", "x"]  # the external one has its location already
    assert (missing, mismatched) == (["c-1-1.noarch"], ["b-1-1.noarch"])
    with pytest.raises(KojiBuildError) as info:
        rpmlist_mod.check_rpms_known(missing, mismatched, "f42-build")
    assert "1 package(s) Koji does not know: c-1-1.noarch" in str(info.value)
    assert "external repos of build tag f42-build" in str(info.value)
    assert "differ from the RPM Koji has under the same name" in str(info.value)
    rpmlist_mod.check_rpms_known([], [], "f42-build")  # nothing unknown: no error


def test_scm_revision_and_result_message():
    assert kojibuild.scm_revision("git+https://scm/os.git#0123abcd") == "0123abcd"
    assert kojibuild.scm_revision("git+https://scm/os.git") is None
    build = {"name": "host", "version": "1", "release": "2", "volume_name": "DEFAULT"}
    assert kojibuild.result_message([5001], build).endswith("/packages/host/1/2/images")
    scratch = kojibuild.result_message([5001, 5002], None)
    assert scratch.startswith("Scratch host image build results in: ")
    assert scratch.count("/tasks/") == 2 and "/5001" in scratch and "/5002" in scratch


# ------------------------------------------------------------------------------ config


def test_shipped_config_file_reads_as_the_defaults():
    config = builder_config.load_builder_config(REPO_ROOT / "conf" / "kojid" / "hostimage.conf")
    assert config == builder_config.BuilderConfig(compose_timeout=14400.0)


def test_config_values_and_errors(tmp_path):
    path = tmp_path / "hostimage.conf"
    path.write_text(textwrap.dedent("""\
        [hostimage]
        engine = dnf
        install_group = my-group
        base_image = oci-archive:/srv/base.tar
        sign_key = 0xDEADBEEF
        gpg_homedir = /etc/hostimage/gnupg
        delta_from = 3
        server_cmd = /usr/bin/darkhttpd /srv/repo --port 8080
        compose_timeout = 0
        """))
    config = builder_config.load_builder_config(path)
    assert config.engine == "dnf" and config.install_group == "my-group"
    assert config.base_image == "oci-archive:/srv/base.tar"
    assert config.gpg_homedir == Path("/etc/hostimage/gnupg")
    assert config.delta_from == 3 and config.compose_timeout == 0
    assert config.server_cmd == ["/usr/bin/darkhttpd", "/srv/repo", "--port", "8080"]
    absent = tmp_path / "absent.conf"
    assert builder_config.load_builder_config(absent) == builder_config.BuilderConfig()
    for text, message in (
        ("[hostimage]\nengine = mock\n", "engine: expected one of rpm-ostree, dnf, got 'mock'"),
        ("[hostimage]\ndelta_from = many\n", "delta_from: expected a int, got 'many'"),
        ("[hostimage]\ndelta_from = 11\n", "delta_from: expected at most 10"),
        ("[hostimage]\ncompose_timout = 5\n", "compose_timout: unknown option"),
        ("[other]\n", "expected a [hostimage] section"),
    ):
        path.write_text(text)
        with pytest.raises(KojiBuildError) as info:
            builder_config.load_builder_config(path)
        assert str(path) in str(info.value) and message in str(info.value)


# ------------------------------------------------------------------------------ runner


@pytest.fixture
def broot(tmp_path):
    """A STAND-IN kojid BuildRoot (tests/kojid_standin.py): real commands, no mock."""
    hub = StandinHub(upload_root=tmp_path / "hub")
    options = standin_options(tmp_path)
    root = StandinBuildRoot(hub, options, 10, "x86_64", 1, repo_id=100)
    root.workdir = str(tmp_path / "taskwork")
    Path(root.workdir).mkdir()
    root.init()
    return root


def test_runner_maps_paths_and_runs_in_the_buildroot(broot, tmp_path):
    runner = BuildrootRunner(broot, log_path=tmp_path / "cmds.log")
    work = Path(broot.tmpdir()) / "work"
    work.mkdir()
    inner = runner.inner_path(work)
    assert inner == "/chroot_tmpdir/work"
    assert runner.host_path(inner) == work
    with pytest.raises(BuildrootError, match="expected a path inside the buildroot"):
        runner.inner_path(tmp_path / "elsewhere")
    assert runner.host_path("/../etc") == runner.root / "etc"  # '/..' is '/' in a chroot
    with pytest.raises(BuildrootError, match="expected an absolute path"):
        runner.host_path("etc")

    result = runner.run(["sh", "-c", 'echo "$GREETING" > out.txt; echo done; exit 3'],
                        cwd=work, env={"GREETING": "hello"})
    assert result.returncode == 3
    assert "done" in result.output
    assert (work / "out.txt").read_text() == "hello\n"
    # the argv kojid's BuildRoot.mock received
    assert broot.mock_calls[-1][:5] == ["--cwd", "/chroot_tmpdir/work", "--chroot", "--",
                                       "env"]
    assert "GREETING=hello" in broot.mock_calls[-1]
    log = (tmp_path / "cmds.log").read_text()
    assert "$ sh -c" in log and "[exit 3]" in log

    # run_checked turns the failure into a CommandError quoting the command's output
    with pytest.raises(HostImageError, match="exit 1"):
        run_checked(["sh", "-c", "echo the-tail; exit 1"], runner=runner)


def test_exit_code_decodes_wait_status():
    assert exit_code(0) == 0
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGKILL) == -signal.SIGKILL


def test_runner_timeout_stops_the_command(broot):
    runner = BuildrootRunner(broot, timeout=0.5, cancel_grace=0.5)
    started = time.monotonic()
    result = runner.run(["sleep", "30"])
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    assert "timeout" in result.output


_CANCEL_SCRIPT = """
import signal
import sys
from pathlib import Path
# A task process has Python's own SIGINT handler, whatever the test runner's process
# had: an ignored SIGINT is inherited through exec (a shell starts background jobs so).
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = [{tests!r}, {repo!r}]
from kojid_standin import StandinBuildRoot, StandinHub, standin_options
from koji_hostimage.koji.buildroot import BuildrootRunner

base = Path({base!r})
hub = StandinHub(upload_root=base / "hub")
broot = StandinBuildRoot(hub, standin_options(base), 10, "x86_64", 1, repo_id=100)
broot.workdir = str(base)
broot.init()
runner = BuildrootRunner(broot, cancel_grace=1.0)
try:
    runner.run(["sh", "-c", "echo $$ > {pidfile}; exec sleep 300"])
except KeyboardInterrupt:
    Path({marker!r}).write_text("interrupted")
"""


def test_a_cancelled_task_kills_its_compose(tmp_path):
    """kojid cancels a task by signalling the task process (SIGINT first); the stand-in
    BuildRoot.mock, like kojid's, leaves its child running; the runner must stop it."""
    pidfile = tmp_path / "compose.pid"
    marker = tmp_path / "interrupted"
    script = _CANCEL_SCRIPT.format(tests=str(Path(__file__).parent), repo=str(REPO_ROOT),
                                   base=str(tmp_path), pidfile=pidfile, marker=str(marker))
    task = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the compose never started"
            assert task.poll() is None, "the task process died early"
            time.sleep(0.05)
        compose_pid = int(pidfile.read_text())
        assert _running(compose_pid)
        task.send_signal(signal.SIGINT)  # only the task process, as kojid's first signal
        assert task.wait(timeout=30) == 0
        assert marker.read_text() == "interrupted"
        deadline = time.monotonic() + 10
        while _running(compose_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(compose_pid), "the compose outlived its cancelled task"
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_scm_commit_time_is_the_checked_out_commits_time(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_DATE": "@1700000123 +0000", "GIT_AUTHOR_DATE": "@1600000000 +0000",
           "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    (checkout / "host.yaml").write_text("ref: x\n")
    for argv in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", *argv], cwd=checkout, env=env, check=True, capture_output=True)
    (checkout / "os").mkdir()
    assert kojibuild.scm_commit_time(checkout) == 1700000123  # committer, not author, time
    assert kojibuild.scm_commit_time(checkout / "os") == 1700000123  # a subdirectory
    # another SCM (no git work tree): no epoch, the build is dated now
    plain = tmp_path / "plain"
    plain.mkdir()
    assert kojibuild.scm_commit_time(plain) is None
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    assert kojibuild.scm_commit_time(tmp_path / "empty") is None  # no commit yet


def test_build_request_carries_the_source_date_epoch(tmp_path):
    request = kojibuild.build_request(
        opts=with_defaults({}), config=builder_config.BuilderConfig(server="none"),
        treefile=tmp_path / "host.yaml", output_dir=tmp_path / "out", workdir=tmp_path / "w",
        arch="x86_64", name="host", version="1", release="1", koji_repo="http://k/repo",
        previous=[], base_image=None, source=Source(), runner=None,
        source_date_epoch=1700000123)
    assert request.source_date_epoch == 1700000123
