# SPDX-License-Identifier: GPL-2.0-or-later
"""Built-in example content: a small host OS as RPMs, a repo and a treefile.

``build_example_content(dest)`` builds the spec files under ``examples/specs`` with
rpmbuild (private ``_topdir``) into ``dest/repo``, runs createrepo_c on it, and writes
``dest/host.yaml`` (the treefile) and ``dest/example.repo`` (its repo definition, with an
absolute ``file://`` baseurl) side by side, the way rpm-ostree expects ``.repo`` files
next to the treefile.

It is parametric so tests and demos can make a series of builds with real changes:
``version_overrides`` raises a package's version (an upgrade), ``extra_specs`` adds
packages (spec files or generated ``ExtraPackage`` records), ``omit`` drops example
packages from both the repo and the treefile (a removal).

The RPMs are reproducible (fixed ``SOURCE_DATE_EPOCH``, build host, file times and repo
revision), so the same parameters give byte-identical repodata and therefore the same
compose input hash, wherever they are built.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from koji_hostimage.errors import HostImageError
from koji_hostimage.runner import run_checked
from koji_hostimage.treefile.repos import RepoSource, write_repo_file

log = logging.getLogger(__name__)

#: The example sources: examples/ at the top of the source tree.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SPECS_DIR = EXAMPLES_DIR / "specs"
TREEFILE_NAME = "host.yaml"
REPO_ID = "example"

#: Every package the example specs build, in build order.
EXAMPLE_PACKAGES = (
    "host-filesystem",
    "host-kernel",
    "host-release",
    "host-agent",
    "greet-lib",
    "greeter",
)

#: The version the "update" (v2) fixture raises: see tests/conftest.py.
UPDATE_OVERRIDES = {"greeter": "1.1", "host-release": "2"}

#: Units the treefile enables, by the package that ships them (dropped with ``omit``).
_UNITS_BY_PACKAGE = {"host-agent": ["host-agent.service"]}

# Reproducible builds: every timestamp in RPM headers, payloads and repodata is this.
SOURCE_DATE_EPOCH = 1767225600  # 2026-01-01T00:00:00Z

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9._+~^]+$")
_PATH_RE = re.compile(r"^(/[A-Za-z0-9._+@-]+)+$")


class ExampleContentError(HostImageError):
    """Bad parameters for the example content (names the parameter and the value)."""


@dataclass
class ExtraPackage:
    """A generated package: ``files`` maps absolute paths to their contents.

    ``install`` adds it to the treefile's ``packages``; otherwise it is only in the repo
    (for instance, to be pulled in by another package's ``requires``).
    """

    name: str
    version: str = "1.0"
    release: str = "1"
    summary: str = "Extra example package"
    requires: list[str] = field(default_factory=list)
    files: dict[str, str | bytes] = field(default_factory=dict)
    install: bool = True


@dataclass
class ExampleContent:
    """What ``build_example_content`` produced."""

    dest: Path
    treefile: Path  # dest/host.yaml
    repo_dir: Path  # dest/repo: RPMs + repodata/
    repo_file: Path  # dest/example.repo
    nevras: list[str]  # every RPM built, sorted: name-[epoch:]version-release.arch
    packages: list[str]  # the treefile's `packages`
    rpms: list[Path] = field(default_factory=list)

    @property
    def baseurl(self) -> str:
        return self.repo_dir.as_uri()


def build_example_content(
    dest: Path,
    version_overrides: Mapping[str, str] | None = None,
    extra_specs: Sequence[Path | ExtraPackage] = (),
    omit: Sequence[str] = (),
) -> ExampleContent:
    """Build the example RPMs, their repo and the treefile into ``dest``.

    ``version_overrides`` maps an example package name to ``VERSION`` or
    ``VERSION-RELEASE``. A spec file in ``extra_specs`` must be named ``NAME.spec`` and is
    added to the treefile's packages; ``ExtraPackage`` records follow their ``install``.
    ``omit`` names example packages to leave out of the repo and the treefile.
    """
    dest = Path(dest).resolve()
    overrides = dict(version_overrides or {})
    _check_parameters(overrides, omit)
    dest.mkdir(parents=True, exist_ok=True)
    repo_dir = dest / "repo"
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    repo_dir.mkdir()

    with tempfile.TemporaryDirectory(prefix=".rpmbuild-", dir=dest) as tmp:
        topdir = Path(tmp)
        specs, installed_extras = _collect_specs(topdir, extra_specs, omit)
        _rpmbuild(topdir, specs, overrides)
        rpms = sorted((topdir / "RPMS").rglob("*.rpm"))
        for rpm in rpms:
            shutil.copy2(rpm, repo_dir / rpm.name)
    rpms = sorted(repo_dir.glob("*.rpm"))
    for rpm in rpms:
        # createrepo_c records each file's mtime; pin it so repodata is reproducible.
        os.utime(rpm, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    _createrepo(repo_dir)

    packages = _write_treefile(dest, omit, installed_extras)
    repo_file = dest / f"{REPO_ID}.repo"
    write_repo_file([RepoSource(name=REPO_ID, baseurl=repo_dir.as_uri())], repo_file)
    nevras = sorted(_nevra_of(rpm) for rpm in rpms)
    log.info("example content: %d RPMs in %s", len(rpms), repo_dir)
    return ExampleContent(
        dest=dest,
        treefile=dest / TREEFILE_NAME,
        repo_dir=repo_dir,
        repo_file=repo_file,
        nevras=nevras,
        packages=packages,
        rpms=rpms,
    )


def _check_parameters(overrides: Mapping[str, str], omit: Sequence[str]) -> None:
    for name, value in overrides.items():
        if name not in EXAMPLE_PACKAGES:
            raise ExampleContentError(
                f"version_overrides: {name!r}: expected one of {', '.join(EXAMPLE_PACKAGES)}"
            )
        version, _, release = str(value).partition("-")
        if not _VERSION_RE.match(version) or (release and not _VERSION_RE.match(release)):
            raise ExampleContentError(
                f"version_overrides: {name}: expected VERSION or VERSION-RELEASE, got {value!r}"
            )
    for name in omit:
        if name not in EXAMPLE_PACKAGES:
            raise ExampleContentError(
                f"omit: {name!r}: expected one of {', '.join(EXAMPLE_PACKAGES)}"
            )


def _collect_specs(
    topdir: Path, extra_specs: Sequence[Path | ExtraPackage], omit: Sequence[str]
) -> tuple[list[Path], list[str]]:
    """Return the spec files to build and the extra package names to install."""
    specs = [SPECS_DIR / f"{name}.spec" for name in EXAMPLE_PACKAGES if name not in omit]
    installed: list[str] = []
    generated = topdir / "generated"
    generated.mkdir()
    for extra in extra_specs:
        if isinstance(extra, ExtraPackage):
            specs.append(_generate_spec(generated, topdir / "SOURCES", extra))
            if extra.install:
                installed.append(extra.name)
        else:
            spec = Path(extra)
            if spec.suffix != ".spec" or not spec.is_file():
                raise ExampleContentError(
                    f"extra_specs: {spec}: expected an existing NAME.spec file"
                )
            specs.append(spec.resolve())
            installed.append(spec.stem)
    return specs, installed


def _generate_spec(spec_dir: Path, sources: Path, pkg: ExtraPackage) -> Path:
    """Write a noarch spec for ``pkg``; file contents go to SOURCES (no quoting issues)."""
    if not _NAME_RE.match(pkg.name):
        raise ExampleContentError(f"extra_specs: name: expected an RPM name, got {pkg.name!r}")
    for key in ("version", "release"):
        if not _VERSION_RE.match(getattr(pkg, key)):
            raise ExampleContentError(
                f"extra_specs: {pkg.name}: {key}: expected an RPM {key}, "
                f"got {getattr(pkg, key)!r}"
            )
    sources.mkdir(exist_ok=True)
    install_lines = []
    file_lines = []
    for index, (path, content) in enumerate(sorted(pkg.files.items())):
        if not _PATH_RE.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
            raise ExampleContentError(
                f"extra_specs: {pkg.name}: files: expected a plain absolute path, got {path!r}"
            )
        source = sources / f"{pkg.name}-{index}"
        source.write_bytes(content.encode() if isinstance(content, str) else content)
        install_lines.append(
            f'install -D -m 0644 "%{{_sourcedir}}/{source.name}" "%{{buildroot}}{path}"'
        )
        file_lines.append(path)
    requires = "".join(f"Requires:       {req}\n" for req in pkg.requires)
    spec = spec_dir / f"{pkg.name}.spec"
    spec.write_text(
        f"Name:           {pkg.name}\n"
        f"Version:        {pkg.version}\n"
        f"Release:        {pkg.release}\n"
        f"Summary:        {pkg.summary.splitlines()[0] if pkg.summary else pkg.name}\n"
        "License:        GPL-2.0-or-later\n"
        "BuildArch:      noarch\n"
        "AutoReqProv:    no\n"
        f"{requires}"
        "\n%description\nGenerated by koji_hostimage.example.content.\n"
        "\n%install\nmkdir -p %{buildroot}\n" + "\n".join(install_lines) + "\n"
        "\n%files\n" + "\n".join(file_lines) + "\n",
        encoding="utf-8",
    )
    return spec


def _rpmbuild(topdir: Path, specs: Sequence[Path], overrides: Mapping[str, str]) -> None:
    """One rpmbuild run for all specs; versions come in as ``--define NAME_version V``."""
    argv = [
        "rpmbuild",
        "-bb",
        "--nodeps",
        "--define",
        f"_topdir {topdir}",
        "--define",
        "_buildhost example.invalid",
        "--define",
        "use_source_date_epoch_as_buildtime 1",
        "--define",
        "clamp_mtime_to_source_date_epoch 1",
    ]
    for name, value in sorted(overrides.items()):
        version, _, release = str(value).partition("-")
        macro = name.replace("-", "_")
        argv += ["--define", f"{macro}_version {version}"]
        if release:
            argv += ["--define", f"{macro}_release {release}"]
    argv += [str(spec) for spec in specs]
    # A private HOME: the user's ~/.rpmmacros must not change what gets built.
    env = {"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "HOME": str(topdir)}
    run_checked(argv, env=env, what="rpmbuild")


def _createrepo(repo_dir: Path) -> None:
    run_checked(
        [
            "createrepo_c",
            "--quiet",
            "--no-database",
            "--revision",
            str(SOURCE_DATE_EPOCH),
            "--set-timestamp-to-revision",
            str(repo_dir),
        ],
        what="createrepo_c",
    )


def _write_treefile(dest: Path, omit: Sequence[str], extras: Sequence[str]) -> list[str]:
    """Copy the example treefile into ``dest``, adjusted for ``omit`` and ``extras``."""
    source = EXAMPLES_DIR / TREEFILE_NAME
    target = dest / TREEFILE_NAME
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    packages = [p for p in data["packages"] if p not in omit] + list(extras)
    if not omit and not extras:
        shutil.copyfile(source, target)  # verbatim: keeps the comments
        return packages
    data["packages"] = packages
    dropped_units = {u for name in omit for u in _UNITS_BY_PACKAGE.get(name, [])}
    units = [u for u in data.get("units", []) if u not in dropped_units]
    if units:
        data["units"] = units
    else:
        data.pop("units", None)
    header = f"# Generated from {source.name} by koji_hostimage.example.content\n"
    target.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return packages


def _nevra_of(rpm: Path) -> str:
    # Built with our own specs: the file name is NAME-VERSION-RELEASE.ARCH.rpm (no epoch).
    return rpm.name.removesuffix(".rpm")
