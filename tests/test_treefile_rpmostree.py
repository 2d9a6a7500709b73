# SPDX-License-Identifier: GPL-2.0-or-later
"""Treefiles read exactly as rpm-ostree reads them (issue 12; issue 13 item 2).

A multi-file tree in the style of Fedora CoreOS / fedora-bootc manifests (variables, two
levels of include, conditional-include by arch, releasever and a boolean, arch-include,
packages-ARCH, .repo files with metalink and baseurl), resolved for four arches and two
variable settings; then each departure of the issue on its own.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main
from koji_hostimage.errors import TreefileError
from koji_hostimage.treefile.inputs import FLAT_REPO_FILE_NAME, flatten_for_rpm_ostree
from koji_hostimage.treefile.load import load_treefile
from koji_hostimage.treefile.repos import resolve_repos

METALINK = "https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def distro(tmp_path: Path) -> Path:
    write(tmp_path, {
        "manifest.yaml": """\
            variables:
              id: fedora
              stream: stable
              prod: true
            releasever: 41
            ref: ${id}/${basearch}/${stream}
            automatic-version-prefix: "${releasever}.<date:%Y%m%d>"
            add-commit-metadata:
              fedora-coreos.stream: ${stream}
            include: base.yaml
            packages: [kernel]
            packages-s390x: [s390utils-core]
            packages-aarch64: ["'grub2-efi-aa64' shim-aa64"]
            arch-include:
              x86_64: bootloader-x86_64.yaml
            conditional-include:
              - if: basearch != "s390x"
                include: grub.yaml
              - if: releasever >= 41
                include: f41.yaml
              - if: releasever < 41
                include: does-not-exist.yaml
              - if: prod == false
                include:
                  packages: [debug-tools]
              - if:
                  - basearch == "ppc64le"
                  - prod == true
                include: ppc-prod.yaml
              - if: stream == "testing"
                include: [testing.yaml]
            """,
        "base.yaml": """\
            include: common/core.yaml
            packages: [systemd]
            postprocess: ["echo ${basearch} > /etc/arch"]
            repos: [fedora, local]
            """,
        "common/core.yaml": "packages: [bash, coreutils]\nunits: [sshd.service]\n",
        "bootloader-x86_64.yaml": "packages: [grub2-efi-x64, shim-x64]\n",
        "grub.yaml": "packages: [grub2-tools]\n",
        "f41.yaml": "packages: [f41-only]\nremove-files: [usr/share/f40]\n",
        "ppc-prod.yaml": "packages: [ppc-prod-tools]\n",
        "testing.yaml": "packages: [testing-extras]\n",
        "testing-manifest.yaml": """\
            variables:
              stream: testing
              prod: false
            include: manifest.yaml
            """,
        "fedora.repo": f"""\
            [fedora]
            name=Fedora $releasever - $basearch
            metalink={METALINK}
            enabled=1
            gpgcheck=1
            repo_gpgcheck=0
            gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch
            """,
        "local.repo": "[local]\nbaseurl=file:///srv/local/$basearch\n  file:///srv/mirror\n"
                      "gpgcheck=0\n",
    })
    return tmp_path


COMMON = ["bash", "coreutils", "f41-only", "kernel", "systemd"]


@pytest.mark.parametrize("arch, extra", [
    ("x86_64", ["grub2-efi-x64", "grub2-tools", "shim-x64"]),
    ("aarch64", ["grub2-efi-aa64", "grub2-tools", "shim-aa64"]),
    ("s390x", ["s390utils-core"]),
    ("ppc64le", ["grub2-tools", "ppc-prod-tools"]),
])
def test_distro_tree_resolves_per_arch(distro: Path, arch: str, extra: list[str]):
    tf = load_treefile(distro / "manifest.yaml", arch)
    assert tf.packages == sorted(COMMON + extra)
    assert tf.ref == f"fedora/{arch}/stable"
    assert tf.data["automatic-version-prefix"] == "41.<date:%Y%m%d>"
    assert tf.data["add-commit-metadata"] == {"fedora-coreos.stream": "stable"}
    assert tf.data["postprocess"] == ["echo ${basearch} > /etc/arch"]  # not expanded
    assert tf.data["variables"] == {"basearch": arch, "id": "fedora", "prod": True,
                                    "releasever": 41, "stream": "stable"}
    assert "conditional-include" not in tf.data and "arch-include" not in tf.data
    assert tf.data["units"] == ["sshd.service"]


@pytest.mark.parametrize("arch", ["x86_64", "s390x", "ppc64le"])
def test_distro_tree_with_other_variables(distro: Path, arch: str):
    """The wrapper's variables win over the included manifest's (BTreeMap::append)."""
    tf = load_treefile(distro / "testing-manifest.yaml", arch)
    assert tf.ref == f"fedora/{arch}/testing"
    assert "testing-extras" in tf.packages and "debug-tools" in tf.packages
    assert "ppc-prod-tools" not in tf.packages  # prod is false
    assert tf.data["add-commit-metadata"] == {"fedora-coreos.stream": "testing"}
    # the same through initial variables (rpm-ostree's Treefile::new_boxed)
    direct = load_treefile(distro / "manifest.yaml", arch,
                           variables={"stream": "testing", "prod": False})
    assert direct.packages == tf.packages and direct.ref == tf.ref


def test_repos_pass_through_with_metalink_and_gpg(distro: Path):
    tf = load_treefile(distro / "manifest.yaml", "aarch64")
    repos = resolve_repos(tf)
    assert [r.name for r in repos] == ["fedora", "local"]
    fedora = repos[0]
    assert fedora.options["metalink"] == METALINK and fedora.options["gpgcheck"] == "1"
    assert fedora.expanded["metalink"].endswith("repo=fedora-41&arch=aarch64")
    assert repos[1].baseurl == "file:///srv/local/aarch64"
    flat = flatten_for_rpm_ostree(tf, repos, distro / "flat")
    text = (flat.parent / FLAT_REPO_FILE_NAME).read_text()
    assert f"metalink={METALINK}\n" in text  # unchanged, for rpm-ostree's libdnf
    assert "gpgcheck=1\n" in text and "repo_gpgcheck=0\n" in text
    assert "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch" in text
    assert "baseurl=file:///srv/local/aarch64 file:///srv/mirror\n" in text
    data = json.loads(flat.read_text())
    assert "conditional-include" not in data and "variables" in data
    assert "basearch" not in data["variables"] and data["ref"] == "fedora/aarch64/stable"
    assert load_treefile(flat, "aarch64").packages == tf.packages


def test_no_repos_key_uses_every_enabled_repo(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [x]\n",
                     "a.repo": "[one]\nbaseurl=file:///one\n[off]\nbaseurl=file:///off\n"
                               "enabled=0\n",
                     "b.repo": "[two]\nmirrorlist=https://example.org/ml\n"})
    repos = resolve_repos(load_treefile(tmp_path / "t.yaml", "x86_64"))
    assert [r.name for r in repos] == ["one", "two"]


def test_metalink_checksum_comes_from_the_metalink(tmp_path: Path):
    from koji_hostimage.treefile.repos import repo_checksum

    metalink = tmp_path / "metalink.xml"
    metalink.write_text(
        '<metalink xmlns="http://www.metalinker.org/"><files><file name="repomd.xml">'
        '<verification><hash type="sha256">abc</hash></verification></file></files>'
        '</metalink>')
    write(tmp_path, {"t.yaml": "ref: a\npackages: [x]\n",
                     "m.repo": f"[m]\nmetalink={metalink.as_uri()}\n"})
    repo = resolve_repos(load_treefile(tmp_path / "t.yaml", "x86_64"))[0]
    first = repo_checksum(repo)
    metalink.write_text(metalink.read_text().replace("abc", "abd"))
    assert repo_checksum(repo) != first


@pytest.mark.parametrize("condition, message", [
    ("garbage", "invalid condition"),
    ("myvar garbage true", "one of =="),
    ("mystr > 8", "same type"),
    ("mybool <= true", "only between numbers"),
    ('mystr > "asd"', "only between numbers"),
    ('enoent == "x"', "undefined variable 'enoent'"),
    ("5", "a condition"),
])
def test_condition_errors_like_rpm_ostree(tmp_path: Path, condition: str, message: str):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [x]\nvariables: {mystr: s, mybool: true}\n"
                     f"conditional-include:\n  - if: {condition}\n    include: none.yaml\n"})
    with pytest.raises(TreefileError, match=message) as info:
        load_treefile(tmp_path / "t.yaml", "x86_64")
    assert info.value.key.startswith("conditional-include[0].if")


def test_undefined_variable_in_ref_is_named(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: os/${basearch}/${stream}\npackages: [x]\n"})
    with pytest.raises(TreefileError, match="undefined variable 'stream'"):
        load_treefile(tmp_path / "t.yaml", "x86_64")
    write(tmp_path, {"t.yaml": "ref: a\npackages: [x]\nvariables: {basearch: x}\n"})
    with pytest.raises(TreefileError, match="reserved"):
        load_treefile(tmp_path / "t.yaml", "x86_64")


def test_yaml_1_2_core_schema(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [yes, on, off, 'n']\n"
                     "add-commit-metadata: {mode: 0755, octal: 0o755, flag: yes,"
                     " d: 2024-01-02}\n"})
    tf = load_treefile(tmp_path / "t.yaml", "x86_64")
    assert tf.packages == ["n", "off", "on", "yes"]
    assert tf.data["add-commit-metadata"] == {"mode": 755, "octal": 493, "flag": "yes",
                                              "d": "2024-01-02"}


def test_unknown_key_names_the_nearest(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npakages: [x]\npackages: [y]\n"})
    with pytest.raises(TreefileError) as info:
        load_treefile(tmp_path / "t.yaml", "x86_64")
    assert "unknown key 'pakages' (did you mean 'packages'?)" in str(info.value)


def test_legacy_snake_case_keys_are_migrated(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [y]\nboot_location: modules\n"})
    assert load_treefile(tmp_path / "t.yaml", "x86_64").data["boot-location"] == "modules"


def test_unterminated_quote_and_include_depth(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [\"'foo bar\"]\n"})
    with pytest.raises(TreefileError, match="missing terminating quote"):
        load_treefile(tmp_path / "t.yaml", "x86_64")
    # depth 0 .. 50 loads (51 files); one more level is refused (INCLUDE_MAXDEPTH)
    for n in range(52):
        (tmp_path / f"d{n}.yaml").write_text(f"include: d{n + 1}.yaml\n" if n < 50 else
                                            "packages: [deep]\n")
    (tmp_path / "d0.yaml").write_text("ref: a\ninclude: d1.yaml\n")
    assert load_treefile(tmp_path / "d0.yaml", "x86_64").packages == ["deep"]
    (tmp_path / "d50.yaml").write_text("include: d51.yaml\n")
    (tmp_path / "d51.yaml").write_text("packages: [deeper]\n")
    with pytest.raises(TreefileError, match="at most 50 levels"):
        load_treefile(tmp_path / "d0.yaml", "x86_64")


def test_kickstart_is_refused_with_the_reason(tmp_path: Path):
    (tmp_path / "t.ks").write_text("%packages\nbash\n%end\n")
    with pytest.raises(TreefileError, match="kickstart"):
        load_treefile(tmp_path / "t.ks", "x86_64")


def test_finalize_d_is_found_and_carried(tmp_path: Path):
    write(tmp_path, {"t.yaml": "ref: a\npackages: [y]\n", "finalize.d/10-x": "#!/bin/sh\n",
                     "finalize.d/not-exec": "x"})
    (tmp_path / "finalize.d/10-x").chmod(0o755)
    tf = load_treefile(tmp_path / "t.yaml", "x86_64")
    assert list(tf.finalize_d) == ["10-x"]
    flat = flatten_for_rpm_ostree(tf, [], tmp_path / "flat")
    assert (flat.parent / "finalize.d/10-x").stat().st_mode & 0o100


# -- hostile input (issue 13, item 2) -------------------------------------------------------

def _bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
        prev = name
    return "ref: x\npackages: [a]\nmetadata:\n" + textwrap.indent(text, "  ")


@pytest.mark.parametrize("text, message", [
    (_bomb(), "aliases expanded"),
    ("a: " + "[" * 10000 + "]" * 10000 + "\n", "nesting deeper"),
    ("ref: &r [*r]\n", "recursive alias"),
])
def test_yaml_bombs_give_one_line_errors_quickly(tmp_path: Path, text: str, message: str):
    (tmp_path / "t.yaml").write_text(text)
    start = time.monotonic()
    with pytest.raises(TreefileError, match=message) as info:
        load_treefile(tmp_path / "t.yaml", "x86_64")
    assert time.monotonic() - start < 2 and "\n" not in str(info.value)


def test_deep_json_and_big_file_and_symlink_loop(tmp_path: Path):
    (tmp_path / "t.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(TreefileError, match="valid JSON"):
        load_treefile(tmp_path / "t.json", "x86_64")
    (tmp_path / "big.yaml").write_text("ref: a\n" + "#" * (5 * 1024 * 1024))
    with pytest.raises(TreefileError, match="at most"):
        load_treefile(tmp_path / "big.yaml", "x86_64")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "t.yaml").write_text("ref: a\npackages: [x]\ninclude: loop.yaml\n")
    with pytest.raises(TreefileError, match="symlink loop"):
        load_treefile(tmp_path / "t.yaml", "x86_64")


# -- the command -------------------------------------------------------------------------

def test_treefile_command_prints_the_resolved_treefile(distro: Path, capsys):
    assert main(["treefile", str(distro / "manifest.yaml"), "--arch", "s390x", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["ref"] == "fedora/s390x/stable"
    assert "s390utils-core" in out["data"]["packages"]
    assert out["defaults"]["boot-location"] == "new" and out["defaults"]["selinux"] is True
    assert [(r["id"], Path(r["origin"]).name) for r in out["repos"]] == [
        ("fedora", "fedora.repo"), ("local", "local.repo")]
    assert out["files"][:3] == ["manifest.yaml", "base.yaml", "common/core.yaml"]
    assert main(["treefile", str(distro / "manifest.yaml"), "--arch", "x86_64"]) == 0
    assert "ref: \"fedora/x86_64/stable\"" in capsys.readouterr().out


def test_treefile_command_fails_with_one_line(tmp_path: Path, caplog):
    (tmp_path / "t.yaml").write_text("ref: a\npakages: [x]\n")
    assert main(["treefile", str(tmp_path / "t.yaml")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "did you mean 'packages'" in errors[0]
    assert "\n" not in errors[0]
