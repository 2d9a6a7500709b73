# SPDX-License-Identifier: GPL-2.0-or-later
"""The hub plugin (plugins/hub/hostimage.py) and the opts schema (koji_hostimage.koji.options).

Every test here that calls the plugin uses the STAND-IN kojihub module and the stand-in
``context.session`` from tests/stubs/kojihub.py (kojihub needs PostgreSQL and is not
installable). The plugin is loaded the way the hub loads it, with the real
koji.plugin.PluginTracker, and called the way the hub calls it, through the real
koji.util.call_with_argcheck; koji.tasks, koji.parse_arches and the errors are the real
koji library.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jsonschema
import koji
import koji.plugin
import koji.tasks
import koji.util
import pytest
from koji.context import context

from koji_hostimage.errors import HostImageError
from koji_hostimage.koji import options

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "plugins" / "hub"
STUB_FILE = Path(__file__).resolve().parent / "stubs" / "kojihub.py"

TARGET = "f42-hostimage"
SCM_URL = "git+https://git.example.com/os-config.git#main"


@pytest.fixture
def stub(monkeypatch):
    """The stand-in kojihub, installed as ``kojihub`` for this test only."""
    spec = importlib.util.spec_from_file_location("kojihub", STUB_FILE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "kojihub", module)  # before exec: dataclasses need it
    spec.loader.exec_module(module)
    state = module.reset()
    state.add_target(TARGET, "f42-hostimage-build", "f42-hostimage-candidate", "x86_64 aarch64")
    return module


@pytest.fixture
def plugin(stub, monkeypatch, tmp_path):
    """The hub plugin loaded by koji's own PluginTracker, config file absent (defaults)."""
    # The plugin registers task signatures at import: keep koji's global dict untouched.
    monkeypatch.setattr(koji.tasks, "LEGACY_SIGNATURES", dict(koji.tasks.LEGACY_SIGNATURES))
    tracker = koji.plugin.PluginTracker(path=str(PLUGIN_DIR), prefix="_test_koji_plugin__")
    module = tracker.load("hostimage", reload=True)
    monkeypatch.setattr(module, "CONFIG_FILE", str(tmp_path / "absent" / "hostimage.conf"))
    yield module
    sys.modules.pop("_test_koji_plugin__hostimage", None)


def login(monkeypatch, stub, *perms, user="alice"):
    session = stub.StandInSession(user=user, perms=perms)
    monkeypatch.setattr(context, "session", session, raising=False)
    return session


def call(plugin, *args, **kwargs):
    """Call hostImageBuild as the hub's dispatcher does (real koji.util helper)."""
    return koji.util.call_with_argcheck(plugin.hostImageBuild, list(args), kwargs)


# --- the schema itself -------------------------------------------------------------------


def test_options_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(options.OPTIONS_SCHEMA)
    chosen = jsonschema.validators.validator_for(options.OPTIONS_SCHEMA)
    assert chosen is jsonschema.Draft7Validator
    assert options.OPTIONS_SCHEMA["additionalProperties"] is False
    # Every option has a default and says in words what it expects (messages quote it).
    assert set(options.OPTION_DEFAULTS) == set(options.OPTION_NAMES)
    for name, schema in options.OPTIONS_SCHEMA["properties"].items():
        assert schema.get("description"), name


def test_options_module_imports_nothing_outside_stdlib():
    """Hubs are kept lean: importing the schema must not import jsonschema or yaml."""
    code = (
        "import sys; import koji_hostimage.koji.options; "
        "bad = [m for m in ('jsonschema', 'yaml', 'requests', 'koji') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_validate_opts_returns_copy_and_raises_hostimage_error():
    given = {"arches": ["x86_64"], "scratch": True, "delta_from": ["host-42.1-1"]}
    checked = options.validate_opts(given)
    assert checked == given and checked is not given
    assert options.validate_opts(None) == {}
    with pytest.raises(options.OptionsError) as caught:
        options.validate_opts({"scratch": "yes", "engine": "mock"})
    assert isinstance(caught.value, HostImageError)
    assert len(caught.value.problems) == 2
    assert "option 'engine'" in str(caught.value) and "option 'scratch'" in str(caught.value)


def test_with_defaults_fills_every_key_without_sharing_lists():
    first = options.with_defaults({"scratch": True})
    assert first["scratch"] is True and first["engine"] is None
    assert set(first) == set(options.OPTION_NAMES)
    first["repo"].append("https://x.example/")
    assert options.with_defaults(None)["repo"] == []


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"arches": ["x86_64", "aarch64"], "failable_arches": ["aarch64"]},
        {"scratch": True, "skip_tag": False},
        {"name": "fedora-coreos", "version": "42.20260101.0", "release": "1.fc42"},
        {"version": "1.2~rc1^git3", "release": "0.1"},
        {"repo": ["https://mirror.example/f42/$basearch/os/", "ftp://ftp.example/repo"]},
        {"base_image": "docker://quay.io/fedora/fedora-minimal:42"},
        {"delta_from": "none"},
        {"delta_from": 0},
        {"delta_from": 3},
        {"delta_from": ["fedora-coreos-42.1-1", "fedora-coreos-42.0-2.fc42"]},
        {"engine": "dnf"},
        {"sign_key": "0xDEADBEEF"},
        {"sign_key": "A15B79CC8B22FA6FD43A1F8A1D1AF8C1D3CF7C2E"},
    ],
)
def test_good_opts_pass(opts):
    assert options.option_errors(opts) == []


# --- bad opts, each refused by the hub with a message naming the option -------------------

BAD_OPTS = [
    ({"bogus": 1}, "'bogus'"),
    ({"arches": "x86_64"}, "option 'arches'"),
    ({"arches": []}, "option 'arches'"),
    ({"arches": ["x86_64", "x86_64"]}, "option 'arches'"),
    ({"arches": ["x86 64"]}, "option 'arches' item [0]"),
    ({"arches": ["noarch"]}, "option 'arches' item [0]"),
    ({"failable_arches": [1]}, "option 'failable_arches' item [0]"),
    ({"arches": ["x86_64"], "failable_arches": ["aarch64"]}, "option 'failable_arches'"),
    ({"scratch": "yes"}, "option 'scratch'"),
    ({"skip_tag": 1}, "option 'skip_tag'"),
    ({"version": "42-1"}, "option 'version'"),
    ({"version": ""}, "option 'version'"),
    ({"release": "1-2"}, "option 'release'"),
    ({"release": 1}, "option 'release'"),
    ({"name": "-leading-dash"}, "option 'name'"),
    ({"name": "has space"}, "option 'name'"),
    ({"repo": "https://one.example/repo"}, "option 'repo'"),
    ({"repo": ["file:///etc/passwd"]}, "option 'repo' item [0]"),
    ({"repo": ["not a url"]}, "option 'repo' item [0]"),
    ({"base_image": "quay.io/fedora/fedora:42"}, "option 'base_image'"),
    # local paths would read the builder host's files: builder config only
    ({"base_image": "oci-archive:/srv/base.oci.tar"}, "option 'base_image'"),
    ({"base_image": "dir:/etc"}, "option 'base_image'"),
    ({"delta_from": "all"}, "option 'delta_from'"),
    ({"delta_from": -1}, "option 'delta_from'"),
    ({"delta_from": 11}, "option 'delta_from'"),
    ({"delta_from": True}, "option 'delta_from'"),
    ({"delta_from": ["host-1"]}, "option 'delta_from'"),
    ({"delta_from": []}, "option 'delta_from'"),
    ({"engine": "mock"}, "option 'engine'"),
    ({"sign_key": "my key"}, "option 'sign_key'"),
    ({"sign_key": "ABC"}, "option 'sign_key'"),
]


@pytest.mark.parametrize("opts, named", BAD_OPTS, ids=[repr(o) for o, _ in BAD_OPTS])
def test_bad_opts_refused_naming_the_option(plugin, stub, monkeypatch, opts, named):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError) as caught:
        call(plugin, TARGET, SCM_URL, "host.yaml", opts)
    message = str(caught.value)
    assert named in message
    assert "expected" in message
    assert stub.STATE.tasks == []


def test_bad_opts_message_lists_every_problem(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError) as caught:
        call(plugin, TARGET, SCM_URL, "host.yaml", {"version": "1-2", "engine": "x"})
    assert "option 'version'" in str(caught.value) and "option 'engine'" in str(caught.value)


def test_opts_not_a_dict_refused(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError, match=r"opts: expected a dict"):
        call(plugin, TARGET, SCM_URL, "host.yaml", ["scratch"])


# --- the make_task call --------------------------------------------------------------------


def test_exported_like_a_hub_handler(plugin):
    handler = plugin.hostImageBuild
    assert getattr(handler, "exported", False) is True
    assert not hasattr(handler, "export_alias")  # registered under its own name
    assert handler.__name__ == "hostImageBuild"


def test_make_task_exact_call(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    opts = {
        "arches": ["x86_64"],
        "scratch": True,
        "version": "42.1",
        "repo": ["https://r.example/"],
    }
    task_id = call(plugin, TARGET, SCM_URL, "os/host.yaml", opts)
    [made] = stub.STATE.tasks
    assert task_id == made.task_id
    assert made.method == "hostImageBuild"
    assert made.arglist == [TARGET, SCM_URL, "os/host.yaml", opts]
    assert made.opts == {"channel": "image"}  # no priority key: make_task's default


def test_opts_none_passes_an_empty_dict(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    call(plugin, TARGET, SCM_URL, "host.yaml")
    assert stub.STATE.tasks[0].arglist == [TARGET, SCM_URL, "host.yaml", {}]


def test_keyword_call_and_wrong_arity_like_the_hub(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    call(plugin, target=TARGET, scm_url=SCM_URL, treefile="host.yaml", opts={"scratch": True})
    assert stub.STATE.tasks[0].arglist[3] == {"scratch": True}
    with pytest.raises(koji.ParameterError):
        call(plugin, TARGET, SCM_URL)
    with pytest.raises(koji.ParameterError):
        call(plugin, TARGET, SCM_URL, "host.yaml", {}, None, "extra")


def test_unknown_target_refused(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.GenericError, match="No such build target: nope"):
        call(plugin, "nope", SCM_URL, "host.yaml")
    assert stub.STATE.tasks == []


def test_arch_not_in_build_tag_refused(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError) as caught:
        call(plugin, TARGET, SCM_URL, "host.yaml", {"arches": ["x86_64", "s390x"]})
    message = str(caught.value)
    assert "option 'arches'" in message and "s390x" in message
    assert "f42-hostimage-build" in message
    # failable arches must be among the tag's arches when no arches are requested
    with pytest.raises(koji.ParameterError, match="option 'failable_arches'"):
        call(plugin, TARGET, SCM_URL, "host.yaml", {"failable_arches": ["ppc64le"]})
    assert stub.STATE.tasks == []


def test_build_tag_without_arches_refused(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    stub.STATE.add_target("empty", "empty-build", "empty-dest", None)
    with pytest.raises(koji.ParameterError, match="empty-build .*has no arches"):
        call(plugin, "empty", SCM_URL, "host.yaml")


@pytest.mark.parametrize(
    "scm_url, treefile, named",
    [
        ("https://git.example.com/x.git#main", "host.yaml", "scm_url"),
        ("", "host.yaml", "scm_url"),
        (42, "host.yaml", "scm_url"),
        (SCM_URL, "/etc/host.yaml", "treefile"),
        (SCM_URL, "../outside/host.yaml", "treefile"),
        (SCM_URL, "os/../../host.yaml", "treefile"),
        (SCM_URL, "", "treefile"),
        (SCM_URL, None, "treefile"),
    ],
)
def test_bad_source_refused(plugin, stub, monkeypatch, scm_url, treefile, named):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError, match=f"hostImageBuild: {named}: expected"):
        call(plugin, TARGET, scm_url, treefile)
    assert stub.STATE.tasks == []


# --- permission and priority ---------------------------------------------------------------


def test_permission_refused(plugin, stub, monkeypatch):
    session = login(monkeypatch, stub, "build")
    with pytest.raises(koji.ActionNotAllowed, match=r"image permission required"):
        call(plugin, TARGET, SCM_URL, "host.yaml")
    assert session.checked == ["image"]
    assert stub.STATE.tasks == []


def test_not_logged_in_refused(plugin, stub, monkeypatch):
    session = stub.StandInSession(perms=("image",), logged_in=False)
    monkeypatch.setattr(context, "session", session, raising=False)
    with pytest.raises(koji.ActionNotAllowed, match="user not logged in"):
        call(plugin, TARGET, SCM_URL, "host.yaml")


def test_admin_passes_permission_check(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "admin")
    assert call(plugin, TARGET, SCM_URL, "host.yaml") == stub.STATE.tasks[0].task_id


@pytest.mark.parametrize(
    "perms, priority, expected",
    [
        (("image",), None, None),
        (("image",), 0, None),
        (("image",), 5, koji.PRIO_DEFAULT + 5),
        (("image",), "3", koji.PRIO_DEFAULT + 3),
        (("admin",), -5, koji.PRIO_DEFAULT - 5),
        (("admin",), 10, koji.PRIO_DEFAULT + 10),
    ],
)
def test_priority_passed_on(plugin, stub, monkeypatch, perms, priority, expected):
    login(monkeypatch, stub, *perms)
    call(plugin, TARGET, SCM_URL, "host.yaml", None, priority)
    made = stub.STATE.tasks[0].opts
    if expected is None:
        assert "priority" not in made
    else:
        assert made["priority"] == expected


def test_only_admins_may_raise_priority(plugin, stub, monkeypatch):
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ActionNotAllowed, match="only admins may create high-priority"):
        call(plugin, TARGET, SCM_URL, "host.yaml", None, -1)
    assert stub.STATE.tasks == []


@pytest.mark.parametrize("priority", ["urgent", True, [1]])
def test_bad_priority_refused(plugin, stub, monkeypatch, priority):
    login(monkeypatch, stub, "admin")
    with pytest.raises(koji.ParameterError):
        call(plugin, TARGET, SCM_URL, "host.yaml", None, priority)
    assert stub.STATE.tasks == []


# --- task signatures for policies ------------------------------------------------------------


def test_legacy_signatures_registered_for_policies(plugin):
    """kojihub's policy_data_from_task_args parses task args with koji.tasks (real)."""
    params = koji.tasks.parse_task_params(
        "hostImageBuild", [TARGET, SCM_URL, "host.yaml", {"scratch": True}]
    )
    # 'url' is one of the names kojihub takes the policy data's source from
    assert params == {
        "target": TARGET,
        "url": SCM_URL,
        "treefile": "host.yaml",
        "opts": {"scratch": True},
    }
    # opts may be left off (default None), as for the other image tasks
    params = koji.tasks.parse_task_params("hostImageBuild", [TARGET, SCM_URL, "h.yaml"])
    assert params["opts"] is None
    child_args = ["host", "42.1", "1", "x86_64", {"name": TARGET}, {"id": 1}, {"id": 2}]
    child = koji.tasks.parse_task_params(
        "createHostImage", child_args + [SCM_URL, "host.yaml", {"scratch": True}]
    )
    assert child["arch"] == "x86_64" and child["opts"] == {"scratch": True}
    assert child["target_info"] == {"name": TARGET} and child["url"] == SCM_URL
    assert len(child) == len(options.CHILD_TASK_ARGS)
    with pytest.raises(koji.ParameterError):
        koji.tasks.parse_task_params("hostImageBuild", [TARGET])


# --- configuration -------------------------------------------------------------------------


def write_config(tmp_path, text):
    path = tmp_path / "hostimage.conf"
    path.write_text(text)
    return path


def test_config_missing_file_means_defaults(plugin):
    config = plugin.get_config()
    assert (config.permission, config.channel, config.check_tag_arches) == ("image", "image", True)


def test_config_read_once_and_applied(plugin, stub, monkeypatch, tmp_path):
    path = write_config(
        tmp_path,
        "[hostimage]\npermission = hostimage\nchannel = hostimage\ncheck_tag_arches = no\n",
    )
    monkeypatch.setattr(plugin, "CONFIG_FILE", str(path))
    session = login(monkeypatch, stub, "hostimage")
    call(plugin, TARGET, SCM_URL, "host.yaml", {"arches": ["riscv64"]})
    made = stub.STATE.tasks[0]
    assert made.opts == {"channel": "hostimage"}
    assert made.arglist[3] == {"arches": ["riscv64"]}  # tag arches not checked
    assert session.checked == ["hostimage"]
    # read once: a later change of the file does not reach the running hub
    path.write_text("[hostimage]\nchannel = other\n")
    call(plugin, TARGET, SCM_URL, "host.yaml")
    assert stub.STATE.tasks[1].opts == {"channel": "hostimage"}
    # the default "image" permission no longer suffices
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ActionNotAllowed, match="hostimage permission required"):
        call(plugin, TARGET, SCM_URL, "host.yaml")


@pytest.mark.parametrize(
    "text, named",
    [
        ("[hostimage]\ncheck_tag_arches = maybe\n", "check_tag_arches: expected true or false"),
        ("[hostimage]\nchanel = image\n", "chanel: expected only"),
        ("[hostimage]\nchannel = two words\n", "channel: expected a single name"),
        ("[hostimage]\npermission =\n", "permission: expected a single name"),
    ],
)
def test_bad_config_names_file_and_key(plugin, tmp_path, text, named):
    path = write_config(tmp_path, text)
    with pytest.raises(koji.ConfigurationError) as caught:
        plugin.load_config(str(path))
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_shipped_config_file_loads_and_matches_defaults(plugin):
    config = plugin.load_config(str(ROOT / "conf" / "hub" / "hostimage.conf"))
    assert config == plugin.HubConfig()


# --- hostile values (issue 13): what '$' let through --------------------------------------


@pytest.mark.parametrize(
    "opts, named",
    [
        ({"arches": ["x86_64\n"]}, "'arches' item [0]"),
        ({"failable_arches": ["x86_64\r"]}, "'failable_arches' item [0]"),
        ({"name": "host\n"}, "'name'"),
        ({"version": "1.0\n"}, "'version'"),
        ({"release": "1\n"}, "'release'"),
        ({"repo": ["https://repo.example.com/os/\n"]}, "'repo' item [0]"),
        ({"repo": ["https://repo.example.com/os\x00/../x"]}, "'repo' item [0]"),
        ({"base_image": "docker://quay.io/fedora/fedora:42\n"}, "'base_image'"),
        ({"sign_key": "0xDEADBEEF\n"}, "'sign_key'"),
        ({"delta_from": ["host-1-1\n"]}, "'delta_from'"),
        ({"delta_from": 2.0}, "'delta_from'"),
        ({"name": "host\x7f"}, "'name'"),
    ],
)
def test_control_characters_and_float_counts_are_refused(plugin, stub, monkeypatch, opts,
                                                         named):
    assert options.option_errors(opts) and all(
        problem.startswith(f"option {named}") for problem in options.option_errors(opts))
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError, match=f"invalid opts: option {named[:6]}"):
        call(plugin, TARGET, SCM_URL, "host.yaml", opts)
    assert stub.STATE.tasks == []


def test_the_control_character_rule_means_the_same_in_ecma_262():
    # the schema is also read by non-Python validators: no Python-only regex syntax
    assert options.CONTROL_CHARACTERS == "[\\x00-\\x1f\\x7f]"
    assert options.option_errors({"name": "host", "version": "1.0", "release": "1",
                                  "arches": ["x86_64"], "delta_from": 2}) == []


@pytest.mark.parametrize("treefile", [".", "host.yaml\n", "host.yaml\x00../../x", "os/",
                                      "./", "a/\tb.yaml"])
def test_treefile_paths_that_name_no_file_in_the_checkout_are_refused(
        plugin, stub, monkeypatch, treefile):
    assert options.treefile_path_error(treefile)
    login(monkeypatch, stub, "image")
    with pytest.raises(koji.ParameterError, match="hostImageBuild: treefile: expected"):
        call(plugin, TARGET, SCM_URL, treefile)
    assert stub.STATE.tasks == []
    assert options.treefile_path_error("") and options.treefile_path_error("os/../host.yaml") \
        is None
