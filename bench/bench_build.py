# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a real build's time goes: wall time per stage, and our own code vs the tools.

A generated large image: the example OS plus ``--rpms`` RPMs holding ``--files``
documentation-like files in all (made with rpmbuild once and cached under
/tmp/bench-cache). One real ``build_host_image`` with the dnf engine; the stage table
comes from the build's own stage timings (``stage_seconds``), the tool time from
``runner.TOOL_TIME``: the wall time of every program the build ran (dnf, rpm, ostree,
...). Our own share = the build's wall time - tool time: Python work such as hashing
and packing the archive, reading the rpmdb, and orchestration.

Headline: "own share X% (target < 10%)".
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrepo import CACHE, cached_build, generate_tree  # noqa: E402

from koji_hostimage.example.content import build_example_content  # noqa: E402
from koji_hostimage.pipeline import BuildRequest, build_host_image  # noqa: E402
from koji_hostimage.runner import TOOL_TIME  # noqa: E402

SPEC = """\
# SPDX-License-Identifier: GPL-2.0-or-later
Name:           {name}
Version:        1.0
Release:        1
Summary:        Generated benchmark data
License:        GPL-2.0-or-later
BuildArch:      noarch
AutoReqProv:    no
%global __os_install_post %{{nil}}
%global _build_id_links none

%description
{files} generated text files for bench_build.py.

%install
mkdir -p %{{buildroot}}/usr/share/{name}
tar -xf {tarball} -C %{{buildroot}}/usr/share/{name}

%files
/usr/share/{name}
"""


def make_content(work: Path, final: Path, files: int, rpms: int) -> None:
    """The example OS plus ``rpms`` generated data RPMs (``files`` files in all); built
    in ``work``, which becomes ``final``."""
    specs = []
    for index in range(rpms):
        name = f"bench-data-{index}"
        tree = work / f"tree-{index}"
        count = files // rpms + (1 if index < files % rpms else 0)
        generate_tree(tree, count, seed=42 + index)
        tarball = work / f"{name}.tar"
        subprocess.run(["tar", "-cf", str(tarball), "-C", str(tree / "usr/share/doc"), "."],
                       check=True)
        shutil.rmtree(tree)
        spec = work / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, files=count, tarball=tarball))
        specs.append(spec)
    content = build_example_content(work / "content", extra_specs=specs)
    # the repo file names the repo by its path: the one it will have once renamed
    text = content.repo_file.read_text()
    content.repo_file.write_text(text.replace(str(work.resolve()), str(final)))
    for index in range(rpms):
        (work / f"bench-data-{index}.tar").unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000, help="generated files in all")
    parser.add_argument("--rpms", type=int, default=4, help="RPMs they are split into")
    parser.add_argument("--verbose", action="store_true", help="show the build's log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(relativeCreated)8.0f ms %(name)s: %(message)s")

    final = CACHE / f"build-{args.files}f-{args.rpms}r"
    cache = cached_build(final, lambda work: make_content(work, final, args.files, args.rpms))
    treefile = cache / "content" / "host.yaml"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-build-", dir="/tmp") as tmp:
        TOOL_TIME.reset()
        started = time.monotonic()
        result = build_host_image(BuildRequest(
            treefile=treefile, output_dir=Path(tmp) / "out", arch=platform.machine(),
            engine="dnf", version="1", force_nocache=True, wait_for_cleanup=False))
        built = result.seconds
        tool = TOOL_TIME.seconds
        by_tool = dict(TOOL_TIME.by_tool)
        calls = TOOL_TIME.calls
        from koji_hostimage.fsutil import wait_for_discards

        wait_for_discards()
        after_cleanup = time.monotonic() - started
        manifest = result.manifest
        assert manifest is not None and result.archive is not None
        archive_size = result.archive.stat().st_size
    load_after = os.getloadavg()

    print(f"image: {args.files} generated files in {args.rpms} RPMs + the example OS; "
          f"{manifest.object_count} objects, {manifest.object_bytes / 1e6:.0f} MB in the "
          f"repo, archive {archive_size / 1e6:.0f} MB")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print()
    print(f"{'stage':<10} {'seconds':>8} {'share':>7}")
    for name, seconds in result.stage_seconds.items():
        print(f"{name:<10} {seconds:8.2f} {100 * seconds / built:6.1f}%")
    print(f"{'built':<10} {built:8.2f}  (the \"built ...\" line)")
    print(f"{'+ trash':<10} {after_cleanup - built:8.2f}  (background deletion finished "
          f"{after_cleanup:.2f} s after the start)")
    print()
    print(f"tools: {tool:.2f} s in {calls} runs: " + ", ".join(
        f"{name} {seconds:.2f} s" for name, seconds in
        sorted(by_tool.items(), key=lambda item: -item[1])))
    own = built - tool
    print(f"own code: {own:.2f} s (built - tools: packing and hashing, rpmdb reading, "
          "orchestration)")
    print()
    print(f"own share {100 * own / built:.1f}% (target < 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
