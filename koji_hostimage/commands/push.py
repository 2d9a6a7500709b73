# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage push ARCHIVE DEST`: copy a built archive to a registry, digest kept.

DEST is any containers-transports reference skopeo takes (``docker://HOST/REPO:TAG``,
``oci:DIR:TAG``, ``containers-storage:NAME:TAG``, ...). The copy is
``skopeo copy --preserve-digests --digestfile FILE oci-archive:ARCHIVE DEST``: skopeo
refuses any change to the image (recompressing a layer, converting the manifest) instead
of pushing another digest, and the digest it wrote is compared with the archive's own
manifest digest (the one in ``hostimage.json``). On success the command prints
``sha256:... DEST``; a refused push is one line naming skopeo's reason.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from koji_hostimage.errors import HostImageError
from koji_hostimage.image.oci_reader import OciArchive

HELP = "push a built archive to a registry (skopeo copy), keeping its manifest digest"

_SKOPEO_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


class PushError(HostImageError):
    """skopeo refused the push, or the pushed digest is not the archive's."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", type=Path, metavar="ARCHIVE",
                        help="a NAME-VERSION-RELEASE.ARCH.oci.tar built by koji-hostimage or Koji")
    parser.add_argument("dest", metavar="DEST",
                        help="destination, e.g. docker://registry.example.com/os/host:1.0-1")
    parser.add_argument("--authfile", type=Path, metavar="FILE",
                        help="registry credentials (containers-auth.json, as `podman login` "
                        "writes it)")
    parser.add_argument("--dest-creds", metavar="USER[:PASSWORD]",
                        help="credentials on the command line (visible to other local users: "
                        "prefer --authfile)")
    parser.add_argument("--dest-registry-token", metavar="TOKEN", help="a bearer token")
    parser.add_argument("--dest-cert-dir", type=Path, metavar="DIR",
                        help="client certificates and CA (*.crt, *.cert, *.key)")
    parser.add_argument("--dest-tls-verify", choices=("true", "false"),
                        help="require HTTPS and verify certificates [skopeo's default: true]")
    parser.add_argument("--retry-times", type=int, metavar="N",
                        help="retry a failed transfer N times")
    parser.add_argument("--skopeo", default="skopeo", metavar="PROGRAM",
                        help="the skopeo to run [%(default)s]")


def skopeo_argv(args: argparse.Namespace, digestfile: Path) -> list[str]:
    """The skopeo copy command line for ``args`` (an argv list; no shell ever runs)."""
    argv = [args.skopeo, "copy", "--preserve-digests", f"--digestfile={digestfile}"]
    if args.authfile:
        argv.append(f"--authfile={args.authfile}")
    if args.dest_creds:
        argv.append(f"--dest-creds={args.dest_creds}")
    if args.dest_registry_token:
        argv.append(f"--dest-registry-token={args.dest_registry_token}")
    if args.dest_cert_dir:
        argv.append(f"--dest-cert-dir={args.dest_cert_dir}")
    if args.dest_tls_verify:
        argv.append(f"--dest-tls-verify={args.dest_tls_verify}")
    if args.retry_times is not None:
        argv.append(f"--retry-times={args.retry_times}")
    argv += [f"oci-archive:{Path(args.archive).absolute()}", args.dest]
    return argv


def skopeo_reason(output: str) -> str:
    """The one line that says why skopeo failed (its last ``msg="..."``, unquoted)."""
    messages = _SKOPEO_MSG.findall(output)
    if messages:
        return messages[-1].replace('\\"', '"').replace("\\\\", "\\")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def push(args: argparse.Namespace) -> str:
    """Copy the archive to ``args.dest``; return the manifest digest now at DEST."""
    archive = Path(args.archive)
    with OciArchive(archive) as image:  # refuses, naming it, a file that is no archive
        expected = image.manifest_digest
    with tempfile.TemporaryDirectory(prefix="koji-hostimage-push-") as scratch:
        digestfile = Path(scratch) / "digest"
        argv = skopeo_argv(args, digestfile)
        try:
            # not runner.HostRunner: it logs the argv, which may hold --dest-creds
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    check=False)
        except FileNotFoundError:
            raise PushError(f"{args.skopeo}: not found: install skopeo") from None
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", "replace")
            raise PushError(f"{archive} -> {args.dest}: refused: {skopeo_reason(output)}")
        try:
            pushed = digestfile.read_text(encoding="utf-8").strip()
        except OSError:
            pushed = ""
    if pushed != expected:
        raise PushError(f"{archive} -> {args.dest}: pushed manifest digest {pushed or 'unknown'}"
                        f", expected the archive's {expected}")
    return pushed


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{push(args)} {args.dest}\n")
    return 0
