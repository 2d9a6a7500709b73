# SPDX-License-Identifier: GPL-2.0-or-later
"""Throwaway GPG keys for signing tests: a private GNUPGHOME, no passphrase, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class GpgKey:
    homedir: Path
    fingerprint: str
    public_key: Path  # armored export, for `ostree remote gpg-import`


def _gpg(homedir: Path, *args: str) -> str:
    env = dict(os.environ, GNUPGHOME=str(homedir))
    return subprocess.run(["gpg", "--batch", *args], check=True, capture_output=True,
                          text=True, env=env).stdout


def make_gpg_key(name: str = "Host Image Test") -> GpgKey:
    """Create a key in a fresh short-path homedir (agent sockets need short paths)."""
    homedir = Path(tempfile.mkdtemp(prefix="hi-gpg-", dir="/tmp"))
    homedir.chmod(0o700)
    _gpg(homedir, "--passphrase", "", "--quick-gen-key",
         f"{name} <test@example.invalid>", "ed25519", "sign", "never")
    fingerprint = next(line.split(":")[9] for line in
                       _gpg(homedir, "--list-keys", "--with-colons").splitlines()
                       if line.startswith("fpr:"))
    public_key = homedir / "public.asc"
    public_key.write_text(_gpg(homedir, "--armor", "--export", fingerprint))
    return GpgKey(homedir, fingerprint, public_key)


def remove_gpg_key(key: GpgKey) -> None:
    """Stop the key's gpg-agent (started by gpg itself) and delete its homedir."""
    subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=str(key.homedir)),
                   check=False, capture_output=True)
    shutil.rmtree(key.homedir, ignore_errors=True)
