# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.util: the helpers the hostimage phase calls, same signatures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import traceback

import kobo.conf
from kobo.shortcuts import force_list  # noqa: F401  (pungi.util re-exports it)


def makedirs(path, mode=0o775):
    os.makedirs(path, mode=mode, exist_ok=True)


def get_mtime(path):
    return int(os.stat(path).st_mtime)


def get_file_size(path):
    return os.path.getsize(path)


def levenshtein(a, b):
    """Levenshtein edit distance between two strings (pungi.util.levenshtein)."""
    previous = list(range(len(a) + 1))
    for j in range(1, len(b) + 1):
        current = [j] + [0] * len(a)
        for i in range(1, len(a) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[i] = min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + cost)
        previous = current
    return previous[len(a)]


def get_variant_data(conf, var_name, variant, keys=None):
    """{variant_uid_regex: value or [values]} -> the values whose regex matches."""
    result = []
    for pattern, data in conf.get(var_name, {}).items():
        if not re.match(pattern, variant.uid):
            continue
        if keys is not None:
            keys.add(pattern)
        result.extend(data if isinstance(data, list) else [data])
    return result


@contextlib.contextmanager
def failable(compose, can_fail, variant, arch, deliverable, subvariant=None, logger=None):
    """Log a failure of a failable deliverable and go on; re-raise any other."""
    logger = logger or compose._logger
    if can_fail:
        compose.attempt_deliverable(variant, arch, deliverable, subvariant)
    else:
        compose.require_deliverable(variant, arch, deliverable, subvariant)
    try:
        yield
    except Exception as exc:
        if not can_fail:
            raise
        compose.fail_deliverable(variant, arch, deliverable, subvariant)
        ident = "variant {}, arch {}".format(variant.uid if variant else "None", arch)
        if subvariant:
            ident += f", subvariant {subvariant}"
        message = deliverable.replace("-", " ").capitalize()
        logger.error(f"[FAIL] {message} ({ident}) failed, but going on anyway.")
        logger.error(str(exc))
        logger.debug(traceback.format_exc())


def translate_path(compose, path):
    normpath = os.path.normpath(path)
    for prefix, replacement in compose.conf["translate_paths"]:
        prefix = os.path.normpath(prefix)
        if normpath.startswith(prefix):
            return normpath.replace(prefix, replacement.rstrip("/"), 1)
    return normpath


def get_repo_url(compose, repo, arch="$basearch"):
    if isinstance(repo, dict):
        repo = repo["baseurl"]
    if repo.startswith("/"):
        return translate_path(compose, repo)
    if "://" not in repo:
        variant = compose.all_variants.get(repo)
        if not variant:
            raise RuntimeError(f"There is no variant {repo} to get repo from.")
        repo = translate_path(
            compose, compose.paths.compose.repository(arch, variant, create_dir=False)
        )
    return repo


def get_repo_urls(compose, repos, arch="$basearch", logger=None):
    return [get_repo_url(compose, repo, arch=arch) for repo in repos]


def version_generator(compose, gen):
    """The generators pungi documents for version/release; anything else unchanged."""
    if gen == "!OSTREE_VERSION_FROM_LABEL_DATE_TYPE_RESPIN":
        return f"{compose.image_version}.{compose.image_release}"
    if gen == "!RELEASE_FROM_LABEL_DATE_TYPE_RESPIN":
        return compose.image_release
    if gen == "!RELEASE_FROM_DATE_RESPIN":
        return f"{compose.compose_date}.{compose.compose_respin}"
    if gen == "!VERSION_FROM_VERSION_DATE_RESPIN":
        return f"{compose.ci_base.release.version}.{compose.compose_date}.{compose.compose_respin}"
    if gen == "!VERSION_FROM_VERSION":
        return f"{compose.ci_base.release.version}"
    if gen and gen[0] == "!":
        raise RuntimeError(f"Unknown version generator '{gen}'")
    return gen


def load_config(file_path, defaults={}):  # noqa: B006  (pungi's signature)
    conf = kobo.conf.PyConfigParser()
    conf.load_from_dict(defaults)
    if file_path.endswith(".json"):
        with open(file_path) as f:
            conf.load_from_dict(json.load(f))
        conf.opened_files = [file_path]
    else:
        conf.load_from_file(file_path)
    return conf
