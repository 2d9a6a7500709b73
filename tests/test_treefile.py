# SPDX-License-Identifier: GPL-2.0-or-later
"""koji_hostimage.treefile: loading, merging, validation, repos, input hash, flattening.

Repos are real rpm-md repos made with rpmbuild and createrepo_c; the HTTP case uses a
real server on 127.0.0.1.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import socket
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
from httptools import static_server

from koji_hostimage.errors import HostImageError, TreefileError
from koji_hostimage.treefile.inputs import FLAT_REPO_FILE_NAME, flatten_for_rpm_ostree, input_hash
from koji_hostimage.treefile.load import load_treefile
from koji_hostimage.treefile.repos import (
    RepoSource,
    repo_metadata_checksum,
    resolve_repos,
    write_repo_file,
)

# ---------------------------------------------------------------------------------------
# helpers


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> text, dedented) under ``root``; return root/top.yaml."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        if name.endswith(".sh"):
            path.chmod(0o755)
    return root / "top.yaml"


def build_rpm(topdir: Path, name: str, version: str = "1.0") -> Path:
    """Build a tiny noarch RPM with rpmbuild; return its path."""
    spec = topdir / f"{name}.spec"
    spec.write_text(
        textwrap.dedent(
            f"""\
            Name: {name}
            Version: {version}
            Release: 1
            Summary: tiny test package {name}
            License: GPL-2.0-or-later
            BuildArch: noarch

            %description
            A tiny package for koji-hostimage's treefile tests.

            %install
            mkdir -p %{{buildroot}}/usr/share/{name}
            echo {name}-{version} > %{{buildroot}}/usr/share/{name}/version

            %files
            /usr/share/{name}/version
            """
        )
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", f"--define=_topdir {topdir}", str(spec)],
        check=True,
        capture_output=True,
    )
    return next((topdir / "RPMS" / "noarch").glob(f"{name}-{version}-1*.rpm"))


def createrepo(repo_dir: Path) -> None:
    subprocess.run(["createrepo_c", "--quiet", str(repo_dir)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny RPMs, built once for this module."""
    topdir = tmp_path_factory.mktemp("rpmbuild")
    return {name: build_rpm(topdir, name) for name in ("alpha", "beta")}


@pytest.fixture
def repo(tmp_path: Path, rpms: dict[str, Path]) -> Path:
    """A real rpm-md repo holding ``alpha``."""
    repo_dir = tmp_path / "rpms"
    repo_dir.mkdir()
    shutil.copy(rpms["alpha"], repo_dir)
    createrepo(repo_dir)
    return repo_dir


def expect_error(top: Path, basearch: str = "x86_64") -> TreefileError:
    with pytest.raises(TreefileError) as info:
        load_treefile(top, basearch)
    return info.value


VALID = "ref: test/${basearch}/host\npackages: [alpha]\n"

# ---------------------------------------------------------------------------------------
# malformed treefiles: each gets its own message naming the file, the key, the expectation

MALFORMED = [
    # (id, files, file the error names, key, expected text, got text)
    (
        "bad-suffix",
        {"top.yaml": "include: other.txt\n" + VALID, "other.txt": "ref: x\n"},
        "other.txt",
        None,
        ".yaml, .yml or .json",
        "'.txt'",
    ),
    (
        "bad-yaml",
        {"top.yaml": "ref: [unclosed\npackages: [alpha]\n"},
        "top.yaml",
        None,
        "valid YAML",
        "line",
    ),
    (
        "bad-json",
        {"top.yaml": "include: inc.json\n" + VALID, "inc.json": '{"units": [}'},
        "inc.json",
        None,
        "valid JSON",
        "line 1",
    ),
    (
        "duplicate-key",
        {"top.yaml": VALID + "packages: [beta]\n"},
        "top.yaml",
        None,
        "valid YAML",
        "duplicate key 'packages' at line 3",
    ),
    (
        "top-level-list",
        {"top.yaml": "- ref\n- packages\n"},
        "top.yaml",
        None,
        "a mapping at the top level",
        "a list",
    ),
    (
        "top-level-scalar",
        {"top.yaml": "just a string\n"},
        "top.yaml",
        None,
        "a mapping at the top level",
        "a string",
    ),
    (
        "missing-ref",
        {"top.yaml": "packages: [alpha]\n"},
        "top.yaml",
        "ref",
        "non-empty string (required)",
        "nothing",
    ),
    (
        "ref-wrong-type",
        {"top.yaml": "ref: 42\npackages: [alpha]\n"},
        "top.yaml",
        "ref",
        "a non-empty string",
        "int 42",
    ),
    (
        "ref-empty",
        {"top.yaml": "ref: ''\npackages: [alpha]\n"},
        "top.yaml",
        "ref",
        "a non-empty string",
        "''",
    ),
    (
        "missing-packages",
        {"top.yaml": "ref: a/b\n"},
        "top.yaml",
        "packages",
        "non-empty list of package names (required)",
        "nothing",
    ),
    (
        "empty-packages",
        {"top.yaml": "ref: a/b\npackages: []\n"},
        "top.yaml",
        "packages",
        "non-empty list of package names (required)",
        "an empty list",
    ),
    (
        "packages-string",
        {"top.yaml": "ref: a/b\npackages: alpha\n"},
        "top.yaml",
        "packages",
        "a list of strings",
        "a string 'alpha'",
    ),
    (
        "packages-item-int",
        {"top.yaml": "ref: a/b\npackages: [alpha, 3]\n"},
        "top.yaml",
        "packages[1]",
        "a non-empty string",
        "int 3",
    ),
    (
        "repos-mapping",
        {"top.yaml": VALID + "repos: {a: b}\n"},
        "top.yaml",
        "repos",
        "a list of strings",
        "a mapping",
    ),
    (
        "exclude-packages-string",
        {"top.yaml": VALID + "exclude-packages: foo\n"},
        "top.yaml",
        "exclude-packages",
        "a list of strings",
        "a string 'foo'",
    ),
    (
        "units-item-list",
        {"top.yaml": VALID + "units: [[a]]\n"},
        "top.yaml",
        "units[0]",
        "a non-empty string",
        "a list",
    ),
    (
        "releasever-bool",
        {"top.yaml": VALID + "releasever: true\n"},
        "top.yaml",
        "releasever",
        "a string or an integer",
        "a boolean True",
    ),
    (
        "releasever-list",
        {"top.yaml": VALID + "releasever: [1]\n"},
        "top.yaml",
        "releasever",
        "a string or an integer",
        "a list",
    ),
    (
        "version-prefix-int",
        {"top.yaml": VALID + "automatic-version-prefix: 42\n"},
        "top.yaml",
        "automatic-version-prefix",
        "a non-empty string",
        "int 42",
    ),
    (
        "default-target-list",
        {"top.yaml": VALID + "default-target: [x]\n"},
        "top.yaml",
        "default-target",
        "a non-empty string",
        "a list",
    ),
    (
        "commit-metadata-list",
        {"top.yaml": VALID + "add-commit-metadata: [a, b]\n"},
        "top.yaml",
        "add-commit-metadata",
        "a mapping",
        "a list",
    ),
    (
        "documentation-string",
        {"top.yaml": VALID + "documentation: 'yes'\n"},
        "top.yaml",
        "documentation",
        "a boolean",
        "a string 'yes'",
    ),
    (
        "bad-boot-location",
        {"top.yaml": VALID + "boot-location: sideways\n"},
        "top.yaml",
        "boot-location",
        "one of new, modules, kernel-install",
        "'sideways'",
    ),
    (
        "missing-postprocess-script",
        {"top.yaml": VALID + "postprocess-script: post.sh\n"},
        "top.yaml",
        "postprocess-script",
        "an existing file relative to the treefile",
        "post.sh",
    ),
    (
        "missing-add-files-source",
        {"top.yaml": VALID + "add-files: [[motd, /etc/motd]]\n"},
        "top.yaml",
        "add-files",
        "source files that exist relative to the treefile",
        "motd (no such file)",
    ),
    (
        "missing-include",
        {"top.yaml": VALID + "include: nowhere.yaml\n"},
        "top.yaml",
        "include",
        "an existing treefile",
        "nowhere.yaml (no such file)",
    ),
    (
        "include-wrong-type",
        {"top.yaml": VALID + "include: {a: b}\n"},
        "top.yaml",
        "include",
        "a file name or a list of file names",
        "a mapping",
    ),
    (
        "include-cycle",
        {
            "top.yaml": VALID + "include: a.yaml\n",
            "a.yaml": "include: b.yaml\n",
            "b.yaml": "include: a.yaml\n",
        },
        "b.yaml",
        "include",
        "no include cycle",
        "a.yaml -> ",
    ),
    (
        "self-include",
        {"top.yaml": VALID + "include: top.yaml\n"},
        "top.yaml",
        "include",
        "no include cycle",
        "top.yaml -> ",
    ),
    (
        "arch-packages-string",
        {"top.yaml": VALID + "packages-aarch64: grub2\n"},
        "top.yaml",
        "packages-aarch64",
        "a list of strings",
        "a string 'grub2'",
    ),
    (
        "arch-include-missing",
        {"top.yaml": VALID + "arch-include: {x86_64: x86.yaml}\n"},
        "top.yaml",
        "arch-include.x86_64",
        "an existing treefile",
        "x86.yaml (no such file)",
    ),
    (
        "arch-include-not-mapping",
        {"top.yaml": VALID + "arch-include: [a.yaml]\n"},
        "top.yaml",
        "arch-include",
        "a mapping of basearch to file(s)",
        "a list",
    ),
    (
        "error-in-included-file",
        {"top.yaml": VALID + "include: inc.yaml\n", "inc.yaml": "units: 7\n"},
        "inc.yaml",
        "units",
        "a list of strings",
        "int 7",
    ),
    (
        "add-files-malformed",
        {"top.yaml": VALID + "add-files: [[only-one]]\n"},
        "top.yaml",
        "add-files",
        "[source, destination] string pairs",
        "a list",
    ),
]


@pytest.mark.parametrize(
    "files,where,key,expected,got",
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_treefile_is_refused_with_specific_message(
    tmp_path: Path, files, where, key, expected, got
):
    error = expect_error(write_tree(tmp_path, files))
    assert Path(error.path) == tmp_path / where
    assert error.key == key
    assert expected in error.expected
    assert got in (error.got or "")
    message = str(error)
    assert message.startswith(str(tmp_path / where))
    if key:
        assert f": {key}: expected " in message


def test_missing_top_level_file(tmp_path: Path):
    error = expect_error(tmp_path / "absent.yaml")
    assert error.path == str(tmp_path / "absent.yaml")
    assert "no such file" in str(error)


def test_any_arch_is_accepted_in_arch_keys_and_as_basearch(tmp_path: Path):
    """Departure 5: packages-ARCH / arch-include keys of any arch (riscv64, loongarch64 ...)
    are accepted, as take_archful_pkgs does; only the basearch's are used."""
    top = write_tree(tmp_path, {
        "top.yaml": VALID + "packages-riscv64: [rv]\npackages-loongarch64: [la]\n"
        "arch-include: {mips64el: m.yaml, riscv64: rv.yaml}\n",
        "rv.yaml": "packages: [rv-extra]\n",
    })
    assert load_treefile(top, "x86_64").packages == ["alpha"]
    assert load_treefile(top, "riscv64").packages == ["alpha", "rv", "rv-extra"]
    assert load_treefile(top, "loongarch64").packages == ["alpha", "la"]
    error = expect_error(top, basearch="x86 64")
    assert "basearch" in error.expected


def test_file_included_twice_is_refused_like_rpm_ostree(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "include: [a.yaml, b.yaml]\n",
            "a.yaml": "include: common.yaml\n",
            "b.yaml": "include: common.yaml\n",
            "common.yaml": "units: [x.service]\n",
        },
    )
    error = expect_error(top)
    assert error.path == str(tmp_path / "b.yaml")
    assert "common.yaml was already included" in error.got


def test_repos_id_not_found(tmp_path: Path, repo: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "repos: [base, missing]\n",
            "base.repo": f"[base]\nbaseurl=file://{repo}\n",
        },
    )
    with pytest.raises(TreefileError) as info:
        resolve_repos(load_treefile(top, "x86_64"))
    error = info.value
    assert error.path == str(top) and error.key == "repos"
    assert "defined in a *.repo file" in error.expected and "(defined: base)" in error.expected
    assert error.got == "'missing'"


def test_malformed_repo_file(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {"top.yaml": VALID + "repos: [base]\n", "base.repo": "baseurl=file:///x\n"},
    )
    with pytest.raises(TreefileError) as info:
        resolve_repos(load_treefile(top, "x86_64"))
    assert info.value.path == str(tmp_path / "base.repo")
    assert "yum .repo" in info.value.expected


def test_repo_without_any_url(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {"top.yaml": VALID + "repos: [base]\n", "base.repo": "[base]\nname=no url\n"},
    )
    with pytest.raises(TreefileError) as info:
        resolve_repos(load_treefile(top, "x86_64"))
    assert info.value.key == "base" and "metalink or mirrorlist" in info.value.expected


# ---------------------------------------------------------------------------------------
# positive cases


def test_include_merge_follows_rpm_ostree(tmp_path: Path):
    """Vectors: included items first; scalars: includer wins; maps: includer wins per key;
    packages: a sorted set."""
    top = write_tree(
        tmp_path,
        {
            "top.yaml": """\
                include: [common/base.yaml, extra.json]
                ref: test/top
                packages: [zeta, alpha]
                units: [top.service]
                default-target: graphical.target
                add-commit-metadata: {origin: top, top-only: 1}
            """,
            "common/base.yaml": """\
                include: deeper.yaml
                ref: test/base
                packages: [alpha, beta]
                units: [base.service]
                default-target: multi-user.target
                automatic-version-prefix: "40"
                add-commit-metadata: {origin: base, base-only: 2}
            """,
            "common/deeper.yaml": "units: [deep.service]\npackages: [gamma]\n",
            "extra.json": json.dumps({"units": ["extra.service"], "documentation": False}),
        },
    )
    tf = load_treefile(top, "x86_64")
    assert tf.ref == "test/top"
    assert tf.packages == ["alpha", "beta", "gamma", "zeta"]
    # base's own merge: deep + base; then top merges base, then extra (each goes first).
    assert tf.data["units"] == ["extra.service", "deep.service", "base.service", "top.service"]
    assert tf.data["default-target"] == "graphical.target"
    assert tf.data["automatic-version-prefix"] == "40"
    assert tf.data["documentation"] is False
    assert tf.data["add-commit-metadata"] == {"origin": "top", "top-only": 1, "base-only": 2}
    assert "include" not in tf.data
    assert tf.files == [
        top,
        tmp_path / "common/base.yaml",
        tmp_path / "common/deeper.yaml",
        tmp_path / "extra.json",
    ]


def test_arch_include_and_arch_packages(tmp_path: Path):
    files = {
        "top.yaml": """\
            ref: test/${basearch}
            packages: ["alpha beta"]
            packages-x86_64: [grub2, shim]
            packages-aarch64: [uboot]
            arch-include:
              x86_64: x86.yaml
              aarch64: [arm.yaml, arm2.yaml]
        """,
        "x86.yaml": "units: [x86.service]\npackages-x86_64: [microcode]\n",
        "arm.yaml": "units: [arm.service]\n",
        "arm2.yaml": "units: [arm2.service]\n",
    }
    top = write_tree(tmp_path, files)
    x86 = load_treefile(top, "x86_64")
    assert x86.ref == "test/x86_64"
    assert x86.packages == ["alpha", "beta", "grub2", "microcode", "shim"]
    assert x86.data["units"] == ["x86.service"]
    assert not any(k.startswith("packages-") for k in x86.data) and "arch-include" not in x86.data
    arm = load_treefile(top, "aarch64")
    assert arm.packages == ["alpha", "beta", "uboot"]
    assert arm.data["units"] == ["arm2.service", "arm.service"]
    assert arm.files == [top, tmp_path / "arm.yaml", tmp_path / "arm2.yaml"]
    s390 = load_treefile(top, "s390x")
    assert s390.packages == ["alpha", "beta"] and "units" not in s390.data


def test_substitution_only_in_the_fields_rpm_ostree_expands(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": """\
                ref: os/${releasever}/${basearch}/base
                releasever: 42
                packages: [alpha]
                automatic-version-prefix: "${releasever}.<date:%Y%m%d>"
                add-commit-metadata:
                  arch: ${basearch}
                  count: 3
                machineid-compat: false
                check-passwd: {type: none}
                postprocess: ["echo ${basearch}"]
                metadata: {released: 2026-01-01}
            """
        },
    )
    tf = load_treefile(top, "aarch64")
    assert tf.ref == "os/42/aarch64/base"
    assert tf.data["releasever"] == 42
    assert tf.data["automatic-version-prefix"] == "42.<date:%Y%m%d>"
    assert tf.data["add-commit-metadata"] == {"arch": "aarch64", "count": 3}
    assert tf.data["machineid-compat"] is False
    assert tf.data["check-passwd"] == {"type": "none"}
    assert tf.data["postprocess"] == ["echo ${basearch}"]  # not expanded (substitute_vars)
    assert tf.data["metadata"]["released"] == "2026-01-01"  # a string, as serde_yaml reads it
    assert len(input_hash(tf, [])) == 64


def test_releasever_from_include_is_substituted_everywhere(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": "include: rel.yaml\nref: os/${releasever}\npackages: [a]\n",
            "rel.yaml": "releasever: '9'\n",
        },
    )
    assert load_treefile(top, "x86_64").ref == "os/9"


def test_json_treefile(tmp_path: Path):
    top = tmp_path / "top.json"
    top.write_text(json.dumps({"ref": "j/${basearch}", "packages": ["a"], "x-comment": "hi"}))
    tf = load_treefile(top, "ppc64le")
    # rpm-ostree ignores unknown keys of JSON treefiles (YAML ones are refused)
    assert tf.ref == "j/ppc64le" and "x-comment" not in tf.data


def test_postprocess_script_is_read_relative_to_its_file(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "include: sub/inc.yaml\n",
            "sub/inc.yaml": "postprocess-script: post.sh\n",
            "sub/post.sh": "#!/bin/sh\ntrue\n",
        },
    )
    tf = load_treefile(top, "x86_64")
    assert tf.postprocess_script == tmp_path / "sub/post.sh"
    assert tf.data["postprocess-script"] == "sub/post.sh"
    assert tf.files[-1] == tmp_path / "sub/post.sh"


# ---------------------------------------------------------------------------------------
# repos


def test_resolve_repos_from_repo_files_and_extra_repos(tmp_path: Path, repo: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "releasever: 7\nrepos: [second, first]\n",
            "a.repo": f"[first]\nname=First\nbaseurl=file://{repo}/$basearch/$releasever\n"
            "enabled=0\n",
            "b.repo": "[second]\nbaseurl=https://example.com/${basearch}/ http://mirror/\n"
            "[unused]\nbaseurl=https://unused/\n",
        },
    )
    tf = load_treefile(top, "aarch64")
    repos = resolve_repos(tf, [str(repo), "http://koji.example/repos/f42/$arch/"])
    assert [(r.name, r.baseurl) for r in repos] == [
        ("second", "https://example.com/aarch64/"),
        ("first", f"file://{repo}/aarch64/7"),
        ("extra-1", repo.as_uri()),
        ("extra-2", "http://koji.example/repos/f42/$arch/"),
    ]
    assert repos[1].origin == str(tmp_path / "a.repo")


def test_write_repo_file(tmp_path: Path):
    dest = tmp_path / "all.repo"
    write_repo_file(
        [RepoSource("one", "https://a/"), RepoSource("two", "file:///srv/r")],
        dest,
        inner_path=lambda p: "/chroot" + str(p),
    )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(dest)
    assert parser.sections() == ["one", "two"]
    assert parser["one"]["baseurl"] == "https://a/"
    assert parser["two"]["baseurl"] == "file:///chroot/srv/r"
    assert all(
        parser[s]["gpgcheck"] == "0" and parser[s]["enabled"] == "1" for s in ("one", "two")
    )


def test_repo_metadata_checksum_local_file_url_and_http(repo: Path):
    import hashlib

    expected = hashlib.sha256((repo / "repodata/repomd.xml").read_bytes()).hexdigest()
    assert repo_metadata_checksum(str(repo)) == expected
    assert repo_metadata_checksum(repo.as_uri()) == expected
    with static_server(repo.parent) as (base_url, requests):
        assert repo_metadata_checksum(f"{base_url}/{repo.name}/") == expected
    assert any(p.endswith("/rpms/repodata/repomd.xml") for p in requests.paths)


def test_repo_metadata_checksum_unreachable(tmp_path: Path):
    with pytest.raises(TreefileError) as info:
        repo_metadata_checksum(str(tmp_path / "not-a-repo"))
    assert "not-a-repo" in str(info.value) and "repomd.xml" in str(info.value)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(HostImageError) as info:
        repo_metadata_checksum(f"http://127.0.0.1:{port}/repo")
    assert f"http://127.0.0.1:{port}/repo" in str(info.value)


# ---------------------------------------------------------------------------------------
# input hash


def hashed_tree(root: Path, repo: Path) -> Path:
    return write_tree(
        root,
        {
            "top.yaml": VALID + "repos: [local]\ninclude: inc.yaml\npostprocess-script: post.sh\n",
            "inc.yaml": "units: [a.service]\n",
            "post.sh": "#!/bin/sh\necho post\n",
            "local.repo": f"[local]\nbaseurl={repo.as_uri()}\n",
        },
    )


def current_hash(top: Path, extra: list[str] | None = None) -> str:
    tf = load_treefile(top, "x86_64")
    return input_hash(tf, resolve_repos(tf, extra or []))


def test_input_hash_is_deterministic_and_location_independent(tmp_path: Path, repo: Path):
    top = hashed_tree(tmp_path / "one", repo)
    first = current_hash(top)
    assert len(first) == 64 and int(first, 16) >= 0
    assert current_hash(top) == first
    # The same sources checked out elsewhere hash the same.
    copy = tmp_path / "two"
    shutil.copytree(tmp_path / "one", copy)
    assert current_hash(copy / "top.yaml") == first


def test_input_hash_changes_with_repo_content(tmp_path: Path, repo: Path, rpms):
    top = hashed_tree(tmp_path / "tree", repo)
    before = current_hash(top)
    shutil.copy(rpms["beta"], repo)
    createrepo(repo)
    assert current_hash(top) != before


def test_input_hash_changes_with_included_file_and_script(tmp_path: Path, repo: Path):
    top = hashed_tree(tmp_path / "tree", repo)
    before = current_hash(top)
    (top.parent / "inc.yaml").write_text("units: [b.service]\n")
    after_include = current_hash(top)
    assert after_include != before
    (top.parent / "post.sh").write_text("#!/bin/sh\necho changed\n")
    assert current_hash(top) != after_include


def test_input_hash_covers_extra_repos(tmp_path: Path, repo: Path, rpms):
    top = hashed_tree(tmp_path / "tree", repo)
    other = tmp_path / "other"
    other.mkdir()
    createrepo(other)
    without = current_hash(top)
    with_extra = current_hash(top, [str(other)])
    assert with_extra != without
    shutil.copy(rpms["beta"], other)
    createrepo(other)
    assert current_hash(top, [str(other)]) != with_extra


# ---------------------------------------------------------------------------------------
# flattening for rpm-ostree


def test_flatten_for_rpm_ostree_round_trips(tmp_path: Path, repo: Path):
    top = hashed_tree(tmp_path / "tree", repo)
    tf = load_treefile(top, "x86_64")
    repos = resolve_repos(tf, ["https://koji.example/repo/"])
    out = tmp_path / "flat"
    flat = flatten_for_rpm_ostree(tf, repos, out)
    data = json.loads(flat.read_text())
    assert data["repos"] == ["local", "extra-1"]
    assert data["postprocess-script"] == "postprocess-script"
    script = out / "postprocess-script"
    assert script.read_text() == "#!/bin/sh\necho post\n"
    assert os.stat(script).st_mode & stat.S_IXUSR
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(out / FLAT_REPO_FILE_NAME)
    assert parser.sections() == ["local", "extra-1"]
    assert parser["extra-1"]["baseurl"] == "https://koji.example/repo/"
    # The flattened file is a valid treefile of its own, with the same content.
    again = load_treefile(flat, "x86_64")
    assert {k: v for k, v in again.data.items() if k not in ("repos", "postprocess-script")} == {
        k: v for k, v in tf.data.items() if k not in ("repos", "postprocess-script")
    }
    assert [r.baseurl for r in resolve_repos(again)] == [r.baseurl for r in repos]


def test_flatten_copies_add_files(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "include: sub/inc.yaml\n",
            "sub/inc.yaml": "add-files: [[files/motd, /usr/etc/motd]]\n",
            "sub/files/motd": "hello\n",
        },
    )
    tf = load_treefile(top, "x86_64")
    assert tf.data["add-files"] == [["sub/files/motd", "/usr/etc/motd"]]
    flat = flatten_for_rpm_ostree(tf, [], tmp_path / "flat")
    data = json.loads(flat.read_text())
    src, dest = data["add-files"][0]
    assert dest == "/usr/etc/motd"
    assert (flat.parent / src).read_text() == "hello\n"


def test_example_treefile_loads(example_content):
    """The project's example host treefile (examples/host.yaml) loads and hashes."""
    tf = load_treefile(example_content.treefile, "x86_64")
    assert tf.ref == "example/x86_64/host"
    assert "greeter" in tf.packages
    repos = resolve_repos(tf)
    assert [r.name for r in repos] == ["example"]
    assert input_hash(tf, repos) == input_hash(
        load_treefile(example_content.treefile, "x86_64"), repos
    )


def test_input_hash_names_an_unreadable_repo(tmp_path: Path):
    top = write_tree(
        tmp_path, {"top.yaml": VALID + "repos: [gone]\n", "g.repo": "[gone]\nbaseurl=/nowhere\n"}
    )
    tf = load_treefile(top, "x86_64")
    with pytest.raises(TreefileError) as info:
        input_hash(tf, resolve_repos(tf))
    error = info.value
    assert error.path == str(top) and error.key == "repos"
    assert "'gone'" in error.expected and str(tmp_path / "g.repo") in error.expected
    assert "/nowhere/repodata/repomd.xml" in error.got


@pytest.mark.parametrize("location", ["", "http://a/\n[evil]", "/path with space"])
def test_extra_repo_with_whitespace_is_refused(tmp_path: Path, location: str):
    tf = load_treefile(write_tree(tmp_path, {"top.yaml": VALID}), "x86_64")
    with pytest.raises(TreefileError) as info:
        resolve_repos(tf, [location])
    assert info.value.key == "extra repos" and info.value.got == repr(location)


# ---------------------------------------------------------------------------------------
# confinement: every file a treefile names resolves inside the source root


def checkout(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    """A checkout under tmp_path/checkout and a secret file outside it; (top, secret)."""
    secret = tmp_path / "outside" / "secret.yaml"
    secret.parent.mkdir()
    secret.write_text("units: [leaked.service]\n")  # a valid treefile: loads if reached
    (tmp_path / "checkout").mkdir()
    return write_tree(tmp_path / "checkout", files), secret


def opened_documents(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every treefile document the loader reads."""
    from koji_hostimage.treefile import load

    opened: list[Path] = []
    real = load._read_document

    def recording(path: Path):
        opened.append(path.resolve())
        return real(path)

    monkeypatch.setattr(load, "_read_document", recording)
    return opened


def assert_escape(error: TreefileError, where: Path, key: str, name: str, target: Path,
                  root: Path) -> None:
    assert error.path == str(where) and error.key == key
    assert error.expected == f"a path inside {root.resolve()}"
    assert error.got == f"{name!r} (resolves to {target.resolve()})"
    assert f": {key}: expected a path inside " in str(error) and repr(name) in str(error)


def test_dotdot_include_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    top, secret = checkout(tmp_path, {"top.yaml": VALID + "include: ../outside/secret.yaml\n"})
    opened = opened_documents(monkeypatch)
    error = expect_error(top)
    assert_escape(error, top, "include", "../outside/secret.yaml", secret, top.parent)
    assert secret.resolve() not in opened


def test_absolute_include_outside_the_root_is_refused(tmp_path: Path, monkeypatch):
    top, secret = checkout(tmp_path, {})
    top.write_text(VALID + f"include: [{secret}]\n")
    opened = opened_documents(monkeypatch)
    assert_escape(expect_error(top), top, "include", str(secret), secret, top.parent)
    assert secret.resolve() not in opened


def test_symlinked_include_pointing_outside_is_refused(tmp_path: Path, monkeypatch):
    top, secret = checkout(tmp_path, {"top.yaml": VALID + "include: sub/common.yaml\n"})
    (top.parent / "sub").mkdir()
    (top.parent / "sub" / "common.yaml").symlink_to(secret)
    opened = opened_documents(monkeypatch)
    error = expect_error(top)
    assert_escape(error, top, "include", "sub/common.yaml", secret, top.parent)
    assert secret.resolve() not in opened


def test_arch_include_outside_is_refused_in_the_including_file(tmp_path: Path):
    top, secret = checkout(
        tmp_path,
        {
            "top.yaml": VALID + "include: inc.yaml\n",
            "inc.yaml": "arch-include:\n  aarch64: ../outside/secret.yaml\n",
        },
    )
    assert load_treefile(top, "x86_64").files == [top, top.parent / "inc.yaml"]  # not used
    error = expect_error(top, basearch="aarch64")
    assert_escape(error, top.parent / "inc.yaml", "arch-include.aarch64",
                  "../outside/secret.yaml", secret, top.parent)


@pytest.mark.parametrize("source", ["tmp", "/etc/passwd"])
def test_add_files_absolute_source_outside_is_refused(tmp_path: Path, source: str):
    top, secret = checkout(tmp_path, {})
    name = str(secret) if source == "tmp" else source
    top.write_text(VALID + f"add-files: [[{name}, /usr/share/x]]\n")
    error = expect_error(top)
    assert_escape(error, top, "add-files", name, Path(name), top.parent)


def test_add_files_through_a_symlinked_directory_is_refused(tmp_path: Path):
    top, secret = checkout(
        tmp_path, {"top.yaml": VALID + "add-files: [[files/secret.yaml, /usr/share/x]]\n"}
    )
    (top.parent / "files").symlink_to(secret.parent, target_is_directory=True)
    error = expect_error(top)
    assert_escape(error, top, "add-files", "files/secret.yaml", secret, top.parent)


def test_postprocess_script_outside_is_refused(tmp_path: Path):
    top, _secret = checkout(
        tmp_path,
        {
            "top.yaml": VALID + "include: sub/inc.yaml\n",
            "sub/inc.yaml": "postprocess-script: ../../outside/post.sh\n",
        },
    )
    script = tmp_path / "outside" / "post.sh"
    script.write_text("#!/bin/sh\ncat /etc/kojid/kojid.conf\n")
    error = expect_error(top)
    assert_escape(error, top.parent / "sub/inc.yaml", "postprocess-script",
                  "../../outside/post.sh", script, top.parent)


@pytest.mark.parametrize("key", ["check-passwd", "check-groups"])
def test_check_passwd_and_groups_files_are_confined(tmp_path: Path, key: str):
    top, _secret = checkout(
        tmp_path, {"top.yaml": VALID + f"{key}: {{type: file, filename: /etc/passwd}}\n"}
    )
    assert_escape(expect_error(top), top, key, "/etc/passwd", Path("/etc/passwd"), top.parent)


def test_check_passwd_file_is_hashed_and_copied_for_rpm_ostree(tmp_path: Path):
    top = write_tree(
        tmp_path,
        {
            "top.yaml": VALID + "include: sub/inc.yaml\n",
            "sub/inc.yaml": "check-passwd: {type: file, filename: passwd}\n"
            "check-groups: {type: previous}\n",
            "sub/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        },
    )
    tf = load_treefile(top, "x86_64", root=tmp_path)
    assert tf.externals["check-passwd"] == tmp_path / "sub/passwd"
    assert tf.data["check-passwd"] == {"type": "file", "filename": "sub/passwd"}
    assert tf.files[-1] == tmp_path / "sub/passwd" and "check-groups" not in tf.externals
    flat = flatten_for_rpm_ostree(tf, [], tmp_path / "flat")
    data = json.loads(flat.read_text())
    assert data["check-passwd"] == {"type": "file", "filename": "check-passwd"}
    assert (flat.parent / "check-passwd").read_text() == "root:x:0:0:root:/root:/bin/bash\n"


def test_conditional_include_files_are_confined(tmp_path: Path):
    """conditional-include files are resolved now, confined like every include."""
    top, secret = checkout(tmp_path, {})
    top.write_text(
        VALID + "conditional-include:\n"
        "  - if: basearch == \"x86_64\"\n    include: {units: [a.service]}\n"
        f"  - if: basearch == \"x86_64\"\n    include: {secret}\n"
    )
    error = expect_error(top)
    assert error.path == str(top) and error.key == "conditional-include[1].include"
    assert "a path inside" in error.expected and str(secret) in error.got

def test_repo_file_symlinked_outside_is_refused(tmp_path: Path, repo: Path):
    top, _secret = checkout(tmp_path, {"top.yaml": VALID + "repos: [evil]\n"})
    outside_repo = tmp_path / "outside" / "builder.repo"
    outside_repo.write_text(f"[evil]\nbaseurl={repo.as_uri()}\n")
    (top.parent / "evil.repo").symlink_to(outside_repo)
    tf = load_treefile(top, "x86_64")
    with pytest.raises(TreefileError) as info:
        resolve_repos(tf)
    assert_escape(info.value, top, "repos", "evil.repo", outside_repo, top.parent)


def test_top_level_treefile_must_be_inside_the_root(tmp_path: Path):
    top, _secret = checkout(tmp_path, {"top.yaml": VALID})
    with pytest.raises(TreefileError) as info:
        load_treefile(top, "x86_64", root=tmp_path / "outside")
    error = info.value
    assert error.path == str(top) and error.expected == f"a path inside {tmp_path / 'outside'}"
    # A top-level symlink to a file elsewhere is outside its own directory too.
    link = tmp_path / "outside" / "link.yaml"
    link.symlink_to(top)
    with pytest.raises(TreefileError, match="resolves to"):
        load_treefile(link, "x86_64")
    with pytest.raises(TreefileError, match="an existing directory as the source root"):
        load_treefile(top, "x86_64", root=tmp_path / "absent")


def test_include_above_the_treefile_is_allowed_inside_the_root(tmp_path: Path):
    """A checkout with hosts/x.yaml including common/base.yaml: fine with the checkout as
    root (relative or absolute name, or through a symlink inside it), refused with the
    default root (hosts/)."""
    root = tmp_path / "checkout"
    write_tree(
        root,
        {
            "common/base.yaml": VALID + "add-files: [[files/motd, /usr/etc/motd]]\n",
            "common/files/motd": "hello\n",
            "hosts/x.yaml": "include: ../common/base.yaml\nunits: [x.service]\n",
            "hosts/y.yaml": f"include: {root}/common/base.yaml\n",
            "hosts/z.yaml": "include: linked.yaml\n",
            "common/plain.yaml": VALID,
        },
    )
    (root / "hosts/linked.yaml").symlink_to(root / "common/plain.yaml")
    x = load_treefile(root / "hosts/x.yaml", "x86_64", root=root)
    assert x.ref == "test/x86_64/host" and x.data["units"] == ["x.service"]
    assert x.externals["add-files"] == [root / "hosts/../common/files/motd"]
    assert x.data["add-files"] == [["../common/files/motd", "/usr/etc/motd"]]
    assert x.root == root.resolve()
    for name in ("y.yaml", "z.yaml"):
        assert load_treefile(root / "hosts" / name, "x86_64", root=root).ref == x.ref
    error = expect_error(root / "hosts/x.yaml")
    assert_escape(error, root / "hosts/x.yaml", "include", "../common/base.yaml",
                  root / "common/base.yaml", root / "hosts")
