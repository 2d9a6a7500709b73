# SPDX-License-Identifier: GPL-2.0-or-later
"""The pungi ``hostimage`` phase, its config schema and the pungi-koji-hostimage entry.

Uses STAND-INS (pungi and kojihub cannot be installed here): tests/pungi_standin/pungi
for the pungi modules the phase imports, and tests/pungi_standin/fake_kojihub.py for a
Koji hub running this project's hub and builder plugins (it checks ``opts`` with the
project's real options schema and writes real files where koji's PathInfo says). kobo
(ThreadPool, config parser, checksums), productmd (Images, images.json), jsonschema and
koji.PathInfo are the real libraries.
"""

from __future__ import annotations

import copy
import importlib.metadata
import io
import json
import logging
import os
import re
import sys
from pathlib import Path

import jsonschema
import pytest
from packaging.requirements import Requirement
from setuptools.config.setupcfg import read_configuration

sys.path.insert(0, str(Path(__file__).parent / "pungi_standin"))

import koji  # noqa: E402
import productmd.images  # noqa: E402
import pungi.checks  # noqa: E402
import pungi.phases  # noqa: E402
import pungi.util  # noqa: E402
from fake_kojihub import FakeKojiHub  # noqa: E402
from pungi.compose import Compose  # noqa: E402
from pungi.phases.image_checksum import ImageChecksumPhase  # noqa: E402
from pungi.scripts import config_validate  # noqa: E402
from pungi.wrappers import kojiwrapper  # noqa: E402

from koji_hostimage.pungi import entry as pungi_entry  # noqa: E402
from koji_hostimage.pungi import schema as pungi_schema
from koji_hostimage.pungi.phase import HostImagePhase  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO_ROOT / "conf/pungi/hostimage.conf"
OVERRIDE_SCHEMA = REPO_ROOT / "conf/pungi/hostimage-schema.json"
SCM_URL = "git+https://example.com/os-config.git#main"
VARIANTS = {"CoreOS": ["x86_64", "aarch64"], "Everything": ["x86_64", "aarch64", "ppc64le"]}


def base_config(topdir: Path, compose_dir: Path | None = None, **extra) -> dict:
    """A pungi config; the compose's repos are served at https://composes.example.com/c."""
    compose_dir = compose_dir or topdir
    variants_file = topdir / "variants.json"
    variants_file.write_text(json.dumps(VARIANTS))
    conf = {
        "release_name": "Example",
        "release_short": "Example",
        "release_version": "42",
        "variants_file": str(variants_file),
        "koji_profile": "test",
        "pkgset_source": "koji",
        "gather_method": "hybrid",
        "translate_paths": [[str(compose_dir / "compose"), "https://composes.example.com/c"]],
        "hostimage_target": "f42-hostimage",
    }
    conf.update(extra)
    return conf


def design_block(**extra) -> dict:
    """The example of DESIGN section 8."""
    block = {
        "scm_url": SCM_URL,
        "treefile": "host.yaml",
        "arches": ["x86_64", "aarch64"],
        "failable": ["aarch64"],
        "version": "42.20260101.0",
        "repo": ["Everything"],
        "subvariant": "CoreOS",
    }
    block.update(extra)
    return block


def merged_validator():
    """pungi's validator shape: draft 4 plus its "url" and "regex" string types."""
    schema = pungi_schema.extend_schema(pungi.checks.make_schema())
    base = jsonschema.Draft4Validator
    checker = base.TYPE_CHECKER.redefine_many(
        {"url": lambda _, value: isinstance(value, str), "regex": lambda _, v: isinstance(v, str)}
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


@pytest.fixture
def hub(tmp_path):
    hub = FakeKojiHub(tmp_path / "koji")
    kojiwrapper.HUBS["test"] = hub
    yield hub
    kojiwrapper.HUBS.pop("test", None)


@pytest.fixture
def make_compose(tmp_path):
    logger = logging.getLogger("test-pungi-hostimage")

    def make(hostimage, **extra):
        topdir = tmp_path / "compose-top"
        topdir.mkdir(exist_ok=True)
        conf = base_config(topdir, hostimage=hostimage, **extra)
        errors, _ = pungi.checks.validate(conf)  # fills pungi's defaults (link_type, ...)
        assert errors == []
        compose = Compose(conf, topdir=topdir, logger=logger)
        compose.read_variants()
        return compose

    return make


def run_phase(compose) -> HostImagePhase:
    phase = HostImagePhase(compose)
    phase.start()
    phase.stop()
    return phase


# -- schema -------------------------------------------------------------------------------


def test_design_example_is_valid_against_merged_schema(tmp_path):
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [design_block()]})
    conf["hostimage_release"] = None
    conf["hostimage_version"] = "!VERSION_FROM_VERSION_DATE_RESPIN"
    assert list(merged_validator().iter_errors(conf)) == []


def test_single_block_and_passthrough_options_are_valid(tmp_path):
    block = design_block(
        name="example-host",
        scratch=False,
        skip_tag=True,
        base_image="docker://quay.io/fedora/fedora-minimal:42",
        delta_from=2,
        engine="dnf",
        sign_key="0xDEADBEEF",
        release=None,
    )
    conf = base_config(tmp_path, hostimage={"^CoreOS$": block})  # one block, not a list
    assert list(merged_validator().iter_errors(conf)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"treefile": None}, "'treefile' is a required property"),
        ({"scm_url": None}, "'scm_url' is a required property"),
        ({"treefil": "host.yaml"}, "Additional properties are not allowed ('treefil'"),
        ({"failable": "aarch64"}, "'aarch64' is not of type 'array'"),
        ({"engine": "docker"}, "'docker' is not one of ['rpm-ostree', 'dnf']"),
        ({"scratch": "yes"}, "'yes' is not of type 'boolean'"),
        ({"delta_from": -1}, "is not valid under any of the given schemas"),
    ],
)
def test_invalid_blocks_are_rejected(tmp_path, change, expected):
    block = design_block()
    for key, value in change.items():
        if value is None:
            del block[key]
        else:
            block[key] = value
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [block]})
    errors = list(merged_validator().iter_errors(conf))
    assert errors, "the invalid block passed validation"
    messages = [e.message for e in errors] + [s.message for e in errors for s in e.context]
    assert any(expected in message for message in messages), messages
    assert all(list(e.absolute_path)[:2] == ["hostimage", "^CoreOS$"] for e in errors)


def test_pungi_validate_reports_hostimage_only_after_extension(tmp_path, monkeypatch):
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [design_block(engine="docker")]})
    errors, warnings = pungi.checks.validate(copy.deepcopy(conf))
    assert errors == []  # plain pungi does not know the option...
    assert "WARNING: Unrecognized config option: hostimage." in warnings
    original = pungi.checks.make_schema
    monkeypatch.setattr(
        pungi.checks, "make_schema", lambda: pungi_schema.extend_schema(original())
    )
    errors, warnings = pungi.checks.validate(copy.deepcopy(conf))
    assert any("hostimage.^CoreOS$" in e and "docker" in e for e in errors), errors
    assert not any("hostimage" in w for w in warnings)


def test_extend_schema_accepts_hostimage_in_skip_phases():
    schema = pungi_schema.extend_schema(pungi.checks.make_schema())
    assert "hostimage" in schema["properties"]["skip_phases"]["items"]["enum"]
    assert schema["properties"]["hostimage"]["patternProperties"][".+"]["anyOf"]


def test_use_buildroot_repo_options_are_validated(tmp_path):
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [design_block(use_buildroot_repo=True)]})
    assert list(merged_validator().iter_errors(conf)) == []
    conf["hostimage"]["^CoreOS$"][0]["use_buildroot_repo"] = "yes"
    conf["hostimage_use_buildroot_repo"] = 1
    errors = list(merged_validator().iter_errors(conf))
    messages = [e.message for e in errors] + [s.message for e in errors for s in e.context]
    assert "1 is not of type 'boolean'" in messages
    assert "'yes' is not of type 'boolean'" in messages  # under the block's anyOf

    # pungi fills the phase-wide default in, as for its own <phase>_<option> settings.
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [design_block()]})
    schema = pungi_schema.extend_schema(pungi.checks.make_schema())
    assert pungi.checks.validate(conf, schema=schema) == ([], [])
    assert conf["hostimage_use_buildroot_repo"] is False


# -- pungi-config-validate --schema-override ----------------------------------------------


def test_override_schema_file_is_generated_from_the_module():
    """conf/pungi/hostimage-schema.json is `python -m koji_hostimage.pungi.schema`."""
    out = io.StringIO()
    pungi_schema.dump_override_schema(out)
    assert OVERRIDE_SCHEMA.read_text() == out.getvalue()
    assert json.loads(out.getvalue()) == {"properties": pungi_schema.schema_properties()}


def test_override_merged_as_pungi_merges_it_equals_the_registered_schema():
    """update_schema(make_schema(), file) is what pungi-koji-hostimage validates against,
    except skip_phases, whose enum (a list) a leaf merge can only replace."""
    merged = config_validate.make_final_schema([str(OVERRIDE_SCHEMA)])
    extended = pungi_schema.extend_schema(pungi.checks.make_schema())
    assert extended["properties"]["skip_phases"]["items"]["enum"][-1] == "hostimage"
    extended["properties"]["skip_phases"]["items"]["enum"].pop()
    assert merged == extended
    # Every definition the override refers to is one pungi's own schema has.
    refs = set(re.findall(r'"\$ref": "#/definitions/([^"]+)"', OVERRIDE_SCHEMA.read_text()))
    assert refs and refs <= set(pungi.checks.make_schema()["definitions"])


def test_pungi_config_validate_accepts_the_example_with_the_override(capsys):
    argv = [str(EXAMPLE_CONFIG), "--offline", "--schema-override", str(OVERRIDE_SCHEMA)]
    assert config_validate.main(argv) is False  # no errors: cli_main exits 0
    assert capsys.readouterr().out == ""


def test_pungi_config_validate_refuses_the_hostimage_keys_without_the_override(capsys):
    with pytest.raises(SystemExit) as raised:
        config_validate.main([str(EXAMPLE_CONFIG), "--offline"])
    assert raised.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    unknown = re.compile(r"WARNING: Unrecognized config option: (\w+)\.( Did you mean \w+\?)?$")
    matches = [unknown.match(line) for line in lines]
    assert all(matches), lines  # nothing else is wrong with the example
    assert {m.group(1) for m in matches} == {
        "hostimage",
        "hostimage_target",
        "hostimage_release",
        "hostimage_use_buildroot_repo",
    }


def test_pungi_config_validate_checks_the_blocks_with_the_override(tmp_path, capsys):
    config = tmp_path / "compose.conf"
    text = EXAMPLE_CONFIG.read_text().replace('"engine": "dnf"', '"engine": "docker"')
    config.write_text(text)
    with pytest.raises(SystemExit) as raised:
        config_validate.main([str(config), "--offline", "--schema-override", str(OVERRIDE_SCHEMA)])
    assert raised.value.code == 1
    out = capsys.readouterr().out
    assert "Failed validation in hostimage.^Everything$: " in out
    assert "Possible reason: 'docker' is not one of ['rpm-ostree', 'dnf']" in out


# -- the phase: validate, task arguments, filtering ---------------------------------------


def test_validate_requires_a_target_and_known_failable_arches(make_compose):
    compose = make_compose({"^CoreOS$": [design_block(failable=["s390x"])]}, hostimage_target=None)
    del compose.conf["hostimage_target"]
    with pytest.raises(ValueError) as raised:
        HostImagePhase(compose).validate()
    lines = str(raised.value).splitlines()
    assert lines == [
        "hostimage['^CoreOS$'][0]: no Koji target: set 'target' in the block, or"
        " 'hostimage_target' or 'global_target'",
        "hostimage['^CoreOS$'][0]: 'failable' names arches not in 'arches'"
        " (x86_64, aarch64): s390x",
    ]
    compose.conf["global_target"] = "f42-global"
    compose.conf["hostimage"]["^CoreOS$"][0]["failable"] = ["*"]
    HostImagePhase(compose).validate()  # a global target and "*" are fine


def test_validate_requires_translate_paths_for_compose_repos_even_when_failable(make_compose):
    """A compose path handed to Koji is a config error before anything runs, also for a
    block whose failure would not fail the compose."""
    compose = make_compose({"^CoreOS$": [design_block(failable=["*"])]}, translate_paths=[])
    with pytest.raises(ValueError) as raised:
        HostImagePhase(compose).validate()
    repos = ", ".join(
        f"{compose.topdir}/compose/{uid}/$arch/os" for uid in ("Everything", "CoreOS")
    )
    assert str(raised.value).splitlines() == [
        f"hostimage['^CoreOS$'][0]: variant CoreOS: repo {repos} is a local path, which"
        " Koji builders cannot read: 'translate_paths' maps no prefix of it to a URL;"
        " expected a (path prefix, URL) pair there, e.g. translate_paths ="
        f" [({os.path.dirname(compose.topdir)!r}, 'https://<server>/<path>')]"
    ]


def test_validate_requires_translate_paths_only_for_blocks_that_need_it(make_compose):
    url = "https://mirror.example.com/extras/$arch/"
    compose = make_compose(
        {
            "^CoreOS$": [design_block(repo=url)],  # an empty variant: no repo of its own
            "^Everything$": [design_block(arches=["s390x"], failable=[])],  # never built
            "^Nothing$": [design_block(repo="/srv/local/repo")],  # matches no variant
        },
        translate_paths=[],
    )
    compose.variants["CoreOS"].is_empty = True
    HostImagePhase(compose).validate()

    compose.conf["hostimage"]["^CoreOS$"][0]["repo"] = [url, "/srv/local/repo", "Missing"]
    with pytest.raises(ValueError) as raised:
        HostImagePhase(compose).validate()
    assert str(raised.value).splitlines() == [
        "hostimage['^CoreOS$'][0]: variant CoreOS: 'repo': There is no variant Missing"
        " to get repo from."
    ]
    compose.conf["hostimage"]["^CoreOS$"][0]["repo"] = [url, "/srv/local/repo"]
    with pytest.raises(ValueError, match=r"variant CoreOS: repo /srv/local/repo is a local"):
        HostImagePhase(compose).validate()
    compose.conf["translate_paths"] = [["/srv/local", "https://local.example.com/"]]
    HostImagePhase(compose).validate()


@pytest.mark.parametrize(
    ("block", "phase_default", "expected"),
    [
        ({}, None, None),  # off by default: the compose's repos replace the tag's
        ({"use_buildroot_repo": True}, None, True),
        ({}, True, True),  # hostimage_use_buildroot_repo: the default for every block
        ({"use_buildroot_repo": False}, True, None),  # the block's own setting wins
        ({}, False, None),
    ],
)
def test_use_buildroot_repo_in_opts_only_when_true(
    make_compose, hub, block, phase_default, expected
):
    extra = {} if phase_default is None else {"hostimage_use_buildroot_repo": phase_default}
    compose = make_compose({"^CoreOS$": [design_block(**block)]}, **extra)
    run_phase(compose)
    [(_, _, _, _, opts)] = hub.calls
    assert opts.get("use_buildroot_repo") is expected
    repo = "https://composes.example.com/c/{}/$arch/os"
    assert opts["repo"] == [repo.format("Everything"), repo.format("CoreOS")]


def test_task_arguments_per_variant_and_arch(make_compose, hub):
    """The exact hostImageBuild calls, through the stand-in hub session."""
    compose = make_compose(
        {
            "^CoreOS$": [design_block(version="!VERSION_FROM_VERSION_DATE_RESPIN")],
            "^Everything$": [
                {
                    "scm_url": SCM_URL,
                    "treefile": "minimal.yaml",
                    "target": "f42-minimal",
                    "arches": ["ppc64le", "s390x"],  # s390x: not an arch of the variant
                    "repo": "https://mirror.example.com/extras/$arch/",
                    "release": None,
                    "engine": "dnf",
                    "skip_tag": True,
                }
            ],
            "^Nothing$": [design_block()],  # no such variant
        },
        hostimage_release="7",
    )
    run_phase(compose)
    repo = "https://composes.example.com/c/{}/$arch/os"
    assert hub.calls == [
        (
            "hostImageBuild",
            "f42-hostimage",
            SCM_URL,
            "host.yaml",
            {
                "arches": ["aarch64", "x86_64"],
                "failable_arches": ["aarch64"],
                "version": "42.20260101.0",
                "release": "7",
                "repo": [repo.format("Everything"), repo.format("CoreOS")],
            },
        ),
        (
            "hostImageBuild",
            "f42-minimal",
            SCM_URL,
            "minimal.yaml",
            {
                "arches": ["ppc64le"],
                "version": "42",  # no version anywhere: the compose's image version
                "release": "20260101.0",  # explicit None: the compose's image release
                "repo": ["https://mirror.example.com/extras/$arch/", repo.format("Everything")],
                "skip_tag": True,
                "engine": "dnf",
            },
        ),
    ]
    assert hub.logins == 2  # one login per task started; reading results needs none


def test_block_without_common_arches_starts_no_task(make_compose, hub):
    compose = make_compose({"^CoreOS$": [design_block(arches=["s390x"], failable=[])]})
    phase = run_phase(compose)
    assert hub.calls == []
    assert phase.finished


def test_local_repo_paths_are_refused(make_compose, hub):
    compose = make_compose({"^CoreOS$": [design_block()]}, translate_paths=[])
    with pytest.raises(RuntimeError, match="is a local path, which Koji builders cannot"):
        run_phase(compose)
    assert hub.calls == []


def test_unconfigured_or_skipped_phase_does_nothing(make_compose, hub):
    compose = make_compose({})
    assert HostImagePhase(compose).skip()
    compose = make_compose({"^CoreOS$": [design_block()]})
    compose.conf["skip_phases"] = ["hostimage"]  # plain pungi's schema refuses it
    run_phase(compose)
    assert hub.calls == []


# -- the phase: results, failures ---------------------------------------------------------


def test_images_linked_added_and_serialised(make_compose, hub, tmp_path):
    compose = make_compose({"^CoreOS$": [design_block()]})
    run_phase(compose)
    (_, *_rest, opts) = hub.calls[0]
    task_id = max(t["id"] for t in hub.tasks.values() if t["method"] == "hostImageBuild")
    # Recorded for pungi-koji's kill handler, which cancels every task listed there.
    assert os.listdir(compose.paths.log.koji_tasks_dir()) == [str(task_id)]

    build = hub.listBuilds(taskID=task_id)[0]
    koji_dir = Path(koji.PathInfo(topdir=hub.topdir).imagebuild(build))
    for arch in ("x86_64", "aarch64"):
        name = f"host-42.20260101.0-1.{arch}.oci.tar"
        linked = Path(compose.topdir, "compose", "CoreOS", arch, "images", name)
        assert linked.stat().st_ino == (koji_dir / name).stat().st_ino  # hardlinked
        manifest = linked.with_name(name.replace(".oci.tar", ".hostimage.json"))
        assert json.loads(manifest.read_text())["arch"] == arch  # linked, not an image
        assert (koji_dir / name.replace(".oci.tar", ".compose.json")).exists()
        assert not linked.with_name(name.replace(".oci.tar", ".compose.json")).exists()

    ImageChecksumPhase(compose).start()  # pungi fills checksums before writing metadata
    images_json = Path(compose.paths.compose.metadata("images.json"))
    compose.im.dump(str(images_json))
    loaded = productmd.images.Images()
    loaded.load(str(images_json))
    assert sorted(loaded.images) == ["CoreOS"]
    for arch in ("x86_64", "aarch64"):
        [image] = loaded.images["CoreOS"][arch]
        path = Path(compose.topdir, "compose", image.path)
        assert image.path == f"CoreOS/{arch}/images/host-42.20260101.0-1.{arch}.oci.tar"
        assert (image.type, image.format, image.bootable) == ("ociarchive", "ociarchive", False)
        assert (image.arch, image.subvariant, image.implant_md5) == (arch, "CoreOS", None)
        assert image.size == path.stat().st_size
        assert image.mtime == int(path.stat().st_mtime)
        assert (image.disc_number, image.disc_count) == (1, 1)
        assert sorted(image.checksums) == ["md5", "sha1", "sha256"]  # pungi's default
    [in_memory] = compose.im.images["CoreOS"]["aarch64"]
    assert (in_memory.deliverable, in_memory.can_fail) == ("hostimage", True)


def test_failed_task_on_failable_arch_is_logged_and_compose_goes_on(make_compose, hub, caplog):
    hub.fail_arches = {"aarch64"}
    compose = make_compose(
        {"^CoreOS$": [design_block(arches=["aarch64"])]}  # failable: aarch64
    )
    with caplog.at_level(logging.ERROR):
        run_phase(compose)  # does not raise
    assert compose.failed_deliverables == [("CoreOS", "*", "hostimage", "CoreOS")]
    assert "[FAIL] Hostimage (variant CoreOS, arch *, subvariant CoreOS) failed" in caplog.text
    assert "hostImageBuild: task 1000 failed: see" in caplog.text
    assert compose.im.images == {}


def test_failed_task_on_non_failable_arch_raises_with_task_id(make_compose, hub):
    hub.fail_arches = {"x86_64"}
    compose = make_compose({"^CoreOS$": [design_block()]})
    with pytest.raises(RuntimeError, match=r"hostImageBuild: task 1000 failed: see .*\.log"):
        run_phase(compose)
    assert compose.failed_deliverables == []


def test_failable_arch_missing_from_successful_task(make_compose, hub, caplog):
    hub.fail_arches = {"aarch64"}  # the child fails, the task (canfail aarch64) succeeds
    compose = make_compose({"^CoreOS$": [design_block()]})
    with caplog.at_level(logging.ERROR):
        run_phase(compose)
    assert sorted(compose.im.images["CoreOS"]) == ["x86_64"]
    assert compose.failed_deliverables == [("CoreOS", "aarch64", "hostimage", "CoreOS")]
    assert "produced no image for arch aarch64" in caplog.text


def test_scratch_build_images_come_from_child_task_dirs(make_compose, hub):
    compose = make_compose({"^CoreOS$": [design_block(scratch=True, failable=[])]})
    run_phase(compose)
    assert hub.builds == {}
    for arch in ("x86_64", "aarch64"):
        [image] = compose.im.images["CoreOS"][arch]
        path = Path(compose.topdir, "compose", image.path)
        assert image.size == path.stat().st_size > 0
        assert image.can_fail is False


# -- the entry point ----------------------------------------------------------------------


@pytest.fixture
def registered():
    pungi_entry.register()
    yield
    pungi_entry.unregister()


def write_pungi_config(tmp_path: Path, **extra) -> Path:
    conf = base_config(
        tmp_path, tmp_path / "out", hostimage={"^CoreOS$": [design_block()]}, **extra
    )
    path = tmp_path / "compose.conf"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in conf.items()))
    return path


def run_entry(tmp_path: Path, *args: str, config: Path | None = None) -> Path:
    compose_dir = tmp_path / "out"
    config = config or write_pungi_config(tmp_path)
    pungi_entry.main(["--compose-dir", str(compose_dir), "--config", str(config), *args])
    return compose_dir


def test_register_adds_the_phase_and_undoes(hub):
    pungi_entry.register()
    try:
        assert "hostimage" in pungi.phases.PHASES_NAMES
        assert pungi.phases.HostImagePhase is HostImagePhase
        assert "hostimage" in pungi.checks.make_schema()["properties"]
        pungi_entry.register()  # idempotent
        assert pungi.phases.PHASES_NAMES.count("hostimage") == 1
    finally:
        pungi_entry.unregister()
    assert "hostimage" not in pungi.phases.PHASES_NAMES
    assert "hostimage" not in pungi.checks.make_schema()["properties"]


def test_entry_runs_the_phase_and_writes_images_json(tmp_path, hub, registered):
    compose_dir = run_entry(tmp_path)
    assert (compose_dir / "STATUS").read_text() == "FINISHED\n"
    assert len(hub.calls) == 1
    loaded = productmd.images.Images()
    loaded.load(str(compose_dir / "compose" / "metadata" / "images.json"))
    assert sorted(loaded.images["CoreOS"]) == ["aarch64", "x86_64"]
    assert all(img.checksums for imgs in loaded.images["CoreOS"].values() for img in imgs)


def test_entry_honours_skip_phase_and_just_phase(tmp_path, hub, registered):
    compose_dir = run_entry(tmp_path, "--skip-phase", "hostimage")
    assert (compose_dir / "STATUS").read_text() == "FINISHED\n"
    assert hub.calls == []
    assert not (compose_dir / "compose" / "metadata" / "images.json").exists()

    compose_dir = run_entry(tmp_path, "--just-phase", "hostimage")
    assert len(hub.calls) == 1
    # pungi-koji itself writes images.json only when one of its image phases ran.
    loaded = productmd.images.Images()
    loaded.load(str(compose_dir / "compose" / "metadata" / "images.json"))
    assert sorted(loaded.images["CoreOS"]) == ["aarch64", "x86_64"]


def test_entry_skip_phases_config_option_validates(tmp_path, hub, registered):
    config = write_pungi_config(tmp_path, skip_phases=["hostimage"])
    run_entry(tmp_path, config=config)
    assert hub.calls == []


def test_entry_rejects_invalid_config_before_any_task(tmp_path, hub, registered, caplog):
    conf = base_config(tmp_path, hostimage={"^CoreOS$": [{"treefile": "host.yaml"}]})
    config = tmp_path / "bad.conf"
    config.write_text("".join(f"{key} = {value!r}\n" for key, value in conf.items()))
    with pytest.raises(SystemExit) as raised, caplog.at_level(logging.WARNING):
        run_entry(tmp_path, config=config)
    assert raised.value.code == 1
    assert "'scm_url' is a required property" in caplog.text
    assert hub.calls == []


def test_entry_rejects_block_without_target(tmp_path, hub, registered):
    config = write_pungi_config(tmp_path, hostimage_target=None)
    text = config.read_text().replace("hostimage_target = None\n", "")
    config.write_text(text)
    with pytest.raises(RuntimeError, match="Configuration is not valid"):
        run_entry(tmp_path, config=config)
    assert hub.calls == []
    assert (tmp_path / "out" / "STATUS").read_text() == "DOOMED\n"


def test_entry_refuses_untranslated_repos_before_any_phase_runs(
    tmp_path, hub, registered, caplog
):
    """Validated once the variants are read, where pungi-koji validates its own phases:
    the compose stops before any phase runs, even though the block may fail."""
    config = write_pungi_config(tmp_path, translate_paths=[])
    text = config.read_text().replace("'failable': ['aarch64']", "'failable': ['*']")
    config.write_text(text)
    with pytest.raises(RuntimeError, match="Configuration is not valid"):
        with caplog.at_level(logging.ERROR):
            run_entry(tmp_path, config=config)
    assert hub.calls == []
    out = tmp_path / "out"
    assert (out / "STATUS").read_text() == "DOOMED\n"
    assert not (out / "compose" / "metadata" / "composeinfo.json").exists()
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith(
        f"HOSTIMAGE: {config}: hostimage['^CoreOS$'][0]: variant CoreOS: repo {out}/compose/"
    )
    expected = f"a (path prefix, URL) pair there, e.g. translate_paths = [({str(tmp_path)!r},"
    assert expected in error


def test_entry_without_pungi_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pungi.scripts", None)
    with pytest.raises(pungi_entry.PungiMissingError, match="pungi is not installed"):
        pungi_entry.register()


def test_example_compose_config_is_valid(tmp_path, make_compose, hub):
    """conf/pungi/hostimage.conf: its hostimage options validate and build as documented."""
    example = pungi.util.load_config(str(EXAMPLE_CONFIG))
    schema = pungi_schema.extend_schema(pungi.checks.make_schema())
    assert pungi.checks.validate(example, offline=True, schema=schema) == ([], [])

    compose = make_compose(example["hostimage"], hostimage_release=None)
    HostImagePhase(compose).validate()
    run_phase(compose)
    assert [call[1:4] for call in hub.calls] == [
        ("f42-hostimage", SCM_URL, "host.yaml"),
        ("f42-hostimage-minimal", SCM_URL, "minimal.yaml"),
    ]
    assert hub.calls[0][4]["delta_from"] == 2
    assert hub.calls[0][4]["release"] == "20260101.0"
    assert hub.calls[1][4]["base_image"] == "docker://quay.io/fedora/fedora-minimal:42"


# -- dependencies -------------------------------------------------------------------------


def test_productmd_requirement_knows_ociarchive():
    """images.json records the archives as type and format "ociarchive": productmd
    validates both against SUPPORTED_IMAGE_TYPES / FORMATS, which have it from 1.38."""
    install_requires = read_configuration(str(REPO_ROOT / "setup.cfg"))["options"][
        "install_requires"
    ]
    [productmd_req] = [
        Requirement(req) for req in install_requires if Requirement(req).name == "productmd"
    ]
    assert "1.37" not in productmd_req.specifier
    assert "1.38" in productmd_req.specifier
    installed = importlib.metadata.version("productmd")
    assert installed in productmd_req.specifier
    assert "ociarchive" in productmd.images.SUPPORTED_IMAGE_TYPES
    assert "ociarchive" in productmd.images.SUPPORTED_IMAGE_FORMATS
