# SPDX-License-Identifier: GPL-2.0-or-later
"""The RPMs and the treefile the real-Koji run builds from.

Built on the project's example content (koji_hostimage.example.content, real rpmbuild),
plus three packages of this run:

- ``host-shadow``: a shell and ``useradd`` for the tree (busybox-static from the host,
  and a small ``useradd -r`` that allocates system ids from 999 downwards, as
  shadow-utils' does), so %pre scriptlets can create system users while the tree is
  installed;
- ``host-svc``: creates the system user ``hostsvc`` in %pre (``useradd -r``);
- ``early-user`` (v2 only): creates ``early`` in %pre; v2's host-svc requires it before
  its own %pre, so without passwd carried over from the previous build ``early`` would
  take hostsvc's UID. The run asserts hostsvc keeps its UID/GID.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from koji_hostimage.example.content import ExampleContent, build_example_content

SYSTEM_USER = "hostsvc"
BUSYBOX = Path("/bin/busybox")

_NO_POST = """\
%global debug_package %{nil}
%global __os_install_post %{nil}
%global __strip /bin/true
"""

USERADD = r"""#!/usr/bin/busybox sh
# useradd -r [-d HOME] [-s SHELL] [-c COMMENT] NAME, for the integration-test tree only:
# the highest free id <= 999 for both the user and its group (shadow-utils' -r order).
home=/; shell=/sbin/nologin; comment=
while [ $# -gt 1 ]; do
    case "$1" in
        -r) shift ;;
        -d) home=$2; shift 2 ;;
        -s) shell=$2; shift 2 ;;
        -c) comment=$2; shift 2 ;;
        *) echo "useradd: unsupported option $1" >&2; exit 2 ;;
    esac
done
name=$1
if busybox grep -q "^$name:" /etc/passwd; then
    echo "useradd: user '$name' already exists" >&2; exit 9
fi
id=$(busybox awk -F: 'FNR==NR {u[$3]=1; next} {g[$3]=1}
    END {for (i=999; i>=201; i--) if (!(i in u) && !(i in g)) {print i; exit}}' \
    /etc/passwd /etc/group)
echo "$name:x:$id:" >> /etc/group
echo "$name:x:$id:$id:$comment:$home:$shell" >> /etc/passwd
"""


def _shadow_spec(sources: Path) -> str:
    shutil.copy2(BUSYBOX, sources / "busybox")
    (sources / "useradd").write_text(USERADD, encoding="utf-8")
    return _NO_POST + f"""\
Name:           host-shadow
Version:        1.0
Release:        1
Summary:        A shell and useradd for the integration-test tree
License:        GPL-2.0-or-later
AutoReqProv:    no
Requires:       host-filesystem
# the tree's /bin is a symlink into /usr: rpm does not see /usr/bin/sh as /bin/sh
Provides:       /bin/sh

%description
busybox as /usr/bin/sh and a minimal useradd -r (integration test content).

%install
install -D -m 755 {sources}/busybox %{{buildroot}}/usr/bin/busybox
ln -s busybox %{{buildroot}}/usr/bin/sh
install -D -m 755 {sources}/useradd %{{buildroot}}/usr/sbin/useradd

%files
/usr/bin/busybox
/usr/bin/sh
/usr/sbin/useradd
"""


def _user_spec(name: str, user: str, version: str, pre_requires: list[str]) -> str:
    requires = "".join(f"Requires(pre):  {dep}\n" for dep in pre_requires)
    return _NO_POST + f"""\
Name:           {name}
Version:        {version}
Release:        1
Summary:        Creates the system user {user}
License:        GPL-2.0-or-later
BuildArch:      noarch
AutoReqProv:    no
Requires(pre):  host-shadow
{requires}
%description
Creates the system user {user} in %pre (integration test content).

%pre
busybox grep -q '^{user}:' /etc/passwd || useradd -r -d /var/lib/{user} -s /sbin/nologin \\
    -c '{user} service' {user}

%install
mkdir -p %{{buildroot}}/usr/share/doc
echo '{name} {version}' > %{{buildroot}}/usr/share/doc/{name}.txt

%files
/usr/share/doc/{name}.txt
"""


def build_content(dest: Path, v2: bool) -> ExampleContent:
    """v1: the example OS + host-shadow + host-svc 1.0; v2: greeter 1.1, host-release 2,
    host-svc 1.1 (which now needs early-user before its %pre) and early-user."""
    specs_dir = dest / "specs"
    sources = dest / "spec-sources"
    specs_dir.mkdir(parents=True)
    sources.mkdir()
    specs = {"host-shadow": _shadow_spec(sources)}
    if v2:
        specs["early-user"] = _user_spec("early-user", "early", "1.0", [])
        specs["host-svc"] = _user_spec("host-svc", SYSTEM_USER, "1.1", ["early-user"])
    else:
        specs["host-svc"] = _user_spec("host-svc", SYSTEM_USER, "1.0", [])
    paths = []
    for name, text in specs.items():
        path = specs_dir / f"{name}.spec"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    overrides = {"greeter": "1.1", "host-release": "2"} if v2 else None
    return build_example_content(dest / "content", version_overrides=overrides,
                                 extra_specs=paths)


def write_treefile(content: ExampleContent, dest: Path) -> Path:
    """The treefile for Koji: the example one without ``repos`` (the builder passes the
    build tag's repo itself)."""
    data = yaml.safe_load(content.treefile.read_text(encoding="utf-8"))
    data.pop("repos", None)
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest
