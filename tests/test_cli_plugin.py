# SPDX-License-Identifier: GPL-2.0-or-later
"""``koji hostimage-build`` (plugins/cli/hostimage.py) on the real koji CLI machinery.

The in-process tests load the plugin with koji's own PluginTracker and call the handler
the way the koji executable does, with koji_cli's real activate_session and watch_tasks,
against the STAND-IN hub session of tests/stubs/kojisession.py (it records calls and
scripts task states). The subprocess tests run the installed ``koji`` executable itself,
with a real koji.ClientSession talking XML-RPC over HTTP to the same STAND-IN hub served
on 127.0.0.1 (tests/stubs/kojisession.FakeHubServer).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import optparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import koji
import koji.plugin
import koji.tasks
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLUGIN_DIR = ROOT / "plugins" / "cli"


def _load_stub(name: str):
    """Load tests/stubs/NAME.py by path: tests/stubs also holds the stand-in ``kojihub``,
    which must never become importable for the rest of the test session."""
    spec = importlib.util.spec_from_file_location(
        f"_hostimage_stub_{name}", TESTS / "stubs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


kojisession = _load_stub("kojisession")
FakeHubServer = kojisession.FakeHubServer
StandInHub = kojisession.StandInHub
StandInSession = kojisession.StandInSession

TARGET = "f42-hostimage"
SCM_URL = "git+https://git.example.com/os-config.git#main"
WEBURL = "https://koji.example.com/koji"


@pytest.fixture(scope="module")
def plugin():
    tracker = koji.plugin.PluginTracker(path=str(PLUGIN_DIR), prefix="_test_koji_cli_plugin__")
    module = tracker.load("hostimage", reload=True)
    yield module
    sys.modules.pop("_test_koji_cli_plugin__hostimage", None)


def goptions(**overrides):
    """The global options the koji executable passes to every handler."""
    values = {
        "quiet": False,
        "weburl": WEBURL,
        "topurl": None,
        "poll_interval": 0,
        "authtype": "noauth",
        "noauth": True,
        "debug": False,
    }
    values.update(overrides)
    return optparse.Values(values)


def run(plugin, hub, *args, **global_overrides):
    """Run the handler as bin/koji does; returns its return value."""
    session = StandInSession(hub)
    return plugin.handle_hostimage_build(goptions(**global_overrides), session, list(args))


def sent(hub):
    [(args, kwargs)] = hub.calls_to("hostImageBuild")
    return args, kwargs


# --- registration ----------------------------------------------------------------------------


def test_handler_is_exported_as_the_hostimage_build_command(plugin):
    handler = plugin.handle_hostimage_build
    assert handler.exported_cli is True
    # bin/koji maps "hostimage-build" to "handle_" + "hostimage_build"
    assert handler.__name__ == "handle_" + "hostimage-build".replace("-", "_")
    assert handler.__doc__.startswith("[build] ")


# --- option parsing into opts --------------------------------------------------------------


def test_every_option_lands_in_opts(plugin):
    hub = StandInHub()
    run(
        plugin,
        hub,
        "--nowait",
        "--arch=x86_64,aarch64",
        "--arch",
        "ppc64le",
        "--failable-arch",
        "ppc64le",
        "--scratch",
        "--skip-tag",
        "--name",
        "fedora-coreos",
        "--version",
        "42.20260101.0",
        "--release",
        "2",
        "--repo",
        "https://a.example/$basearch/",
        "--repo",
        "https://b.example/repo/",
        "--base-image",
        "docker://quay.io/fedora/fedora-minimal:42",
        "--delta-from",
        "fedora-coreos-42.1-1",
        "--delta-from",
        "fedora-coreos-42.0-1",
        "--engine",
        "dnf",
        "--sign-key",
        "0xDEADBEEF",
        "--priority",
        "3",
        TARGET,
        SCM_URL,
        "os/host.yaml",
    )
    args, kwargs = sent(hub)
    assert args == (
        TARGET,
        SCM_URL,
        "os/host.yaml",
        {
            "arches": ["x86_64", "aarch64", "ppc64le"],
            "failable_arches": ["ppc64le"],
            "scratch": True,
            "skip_tag": True,
            "name": "fedora-coreos",
            "version": "42.20260101.0",
            "release": "2",
            "repo": ["https://a.example/$basearch/", "https://b.example/repo/"],
            "base_image": "docker://quay.io/fedora/fedora-minimal:42",
            "delta_from": ["fedora-coreos-42.1-1", "fedora-coreos-42.0-1"],
            "engine": "dnf",
            "sign_key": "0xDEADBEEF",
        },
    )
    assert kwargs == {"priority": 3}


@pytest.mark.parametrize(("flag", "expected"), [("--use-buildroot-repo", True),
                                               ("--no-buildroot-repo", False)])
def test_buildroot_repo_flags(plugin, flag, expected):
    hub = StandInHub()
    run(plugin, hub, "--nowait", "--repo", "https://c.example/$arch/", flag, TARGET, SCM_URL,
        "host.yaml")
    args, _ = sent(hub)
    assert args[3] == {"repo": ["https://c.example/$arch/"], "use_buildroot_repo": expected}


def test_no_options_send_empty_opts_and_no_priority(plugin):
    hub = StandInHub()
    run(plugin, hub, "--nowait", TARGET, SCM_URL, "host.yaml")
    assert sent(hub) == ((TARGET, SCM_URL, "host.yaml", {}), {})


@pytest.mark.parametrize(
    "values, expected",
    [(["none"], "none"), (["2"], 2), (["0"], 0), (["h-1-1"], ["h-1-1"])],
)
def test_delta_from_forms(plugin, values, expected):
    hub = StandInHub()
    flags = [part for value in values for part in ("--delta-from", value)]
    run(plugin, hub, "--nowait", *flags, TARGET, SCM_URL, "host.yaml")
    assert sent(hub)[0][3] == {"delta_from": expected}


@pytest.mark.parametrize("flags, expected", [(["--background"], 5), (["--priority=-3"], -3)])
def test_priority_flags(plugin, flags, expected):
    hub = StandInHub()
    run(plugin, hub, "--nowait", *flags, TARGET, SCM_URL, "host.yaml")
    assert sent(hub)[1] == {"priority": expected}


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--version", "42-1"], "option 'version'"),
        (["--release", "1-2"], "option 'release'"),
        (["--repo", "file:///etc"], "option 'repo'"),
        (["--arch", "noarch"], "option 'arches'"),
        (["--failable-arch", "x86/64"], "--failable-arch: Architecture can be only"),
        (["--base-image", "fedora:42"], "option 'base_image'"),
        (["--sign-key", "nothex"], "option 'sign_key'"),
        (["--delta-from", "3", "--delta-from", "h-1-1"], "--delta-from takes either"),
        (["--background", "--priority", "2"], "--background and --priority"),
        (["--engine", "mock"], "invalid choice: 'mock'"),
        (["--priority", "soon"], "invalid integer value: 'soon'"),
    ],
)
def test_bad_options_refused_before_calling_the_hub(plugin, capsys, flags, named):
    hub = StandInHub()
    with pytest.raises(SystemExit) as caught:
        run(plugin, hub, "--nowait", *flags, TARGET, SCM_URL, "host.yaml")
    assert caught.value.code == 2  # optparse's usage error
    assert named in capsys.readouterr().err
    assert hub.calls == []


@pytest.mark.parametrize("args", [[], [TARGET], [TARGET, SCM_URL], [TARGET, SCM_URL, "a", "b"]])
def test_wrong_number_of_arguments(plugin, capsys, args):
    hub = StandInHub()
    with pytest.raises(SystemExit) as caught:
        run(plugin, hub, *args)
    assert caught.value.code == 2
    assert "Exactly three arguments" in capsys.readouterr().err
    assert hub.calls == []


# --- output, watching, exit codes ----------------------------------------------------------


def test_nowait_prints_task_id_and_url_only(plugin, capsys):
    hub = StandInHub()
    assert run(plugin, hub, "--nowait", TARGET, SCM_URL, "host.yaml") == 0
    task_id = hub.next_task_id - len(hub.child_arches)
    assert capsys.readouterr().out == (
        f"Created task: {task_id}\nTask info: {WEBURL}/taskinfo?taskID={task_id}\n"
    )
    assert hub.calls_to("getTaskInfo") == [] and hub.calls_to("logout") == []


def test_quiet_prints_nothing(plugin, capsys):
    hub = StandInHub()
    run(plugin, hub, "--nowait", TARGET, SCM_URL, "host.yaml", quiet=True)
    assert capsys.readouterr().out == ""


def test_wait_watches_until_the_task_succeeds(plugin, capsys):
    hub = StandInHub(child_arches=["x86_64", "aarch64"])
    assert run(plugin, hub, "--wait", TARGET, SCM_URL, "host.yaml") == 0
    out = capsys.readouterr().out
    parent = min(hub.tasks)
    assert "Watching tasks (this may be safely interrupted)..." in out
    assert f"{parent} hostImageBuild (noarch): free -> open (builder-01.example.com)" in out
    # koji.taskLabel adds ", unknown args" once the builder plugin (loaded by other test
    # modules) has registered the real createHostImage signature: match the stable part
    assert "createHostImage (aarch64" in out
    assert f"{parent} hostImageBuild (noarch) completed successfully" in out
    # watched to the end: the parent reached its last scripted state
    assert hub.tasks[parent].calls >= len(hub.parent_states)
    logout_index = [name for name, _, _ in hub.calls].index("logout")
    first_poll = [name for name, _, _ in hub.calls].index("getTaskInfo")
    assert logout_index < first_poll  # like koji build: log out, then watch


def test_failed_task_returns_non_zero(plugin, capsys):
    hub = StandInHub(parent_states=["OPEN", "FAILED"], child_states=["OPEN", "FAILED"])
    assert run(plugin, hub, "--wait", TARGET, SCM_URL, "host.yaml") == 1
    out = capsys.readouterr().out
    assert "FAILED: GenericError: compose failed: rpm-ostree exited with 1" in out
    assert "hostImageBuild (noarch) failed" in out


def test_failed_child_with_successful_parent_returns_zero(plugin):
    """A failable arch failing: the build (parent) succeeded, so the command succeeds."""
    hub = StandInHub(child_arches=["x86_64", "ppc64le"], child_states=["OPEN", "FAILED"])
    assert run(plugin, hub, "--wait", TARGET, SCM_URL, "host.yaml") == 0


@pytest.mark.parametrize("in_background, watched", [(True, False), (False, True)])
def test_default_waits_unless_in_background(plugin, monkeypatch, in_background, watched):
    monkeypatch.setattr(plugin, "_running_in_bg", lambda: in_background)
    hub = StandInHub()
    run(plugin, hub, TARGET, SCM_URL, "host.yaml")
    assert bool(hub.calls_to("getTaskInfo")) is watched


def test_unknown_method_says_the_plugin_is_missing(plugin, capsys):
    hub = StandInHub(has_plugin=False)
    with pytest.raises(SystemExit) as caught:
        run(plugin, hub, "--wait", TARGET, SCM_URL, "host.yaml")
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "the hub does not have the hostimage plugin installed" in err
    assert "Invalid method: hostImageBuild" in err


def test_other_hub_errors_are_not_mistaken_for_a_missing_plugin(plugin, monkeypatch):
    hub = StandInHub()

    def refuse(*args, **kwargs):
        raise koji.ParameterError("hostImageBuild: option 'arches': expected arches of ...")

    monkeypatch.setattr(hub, "rpc_hostImageBuild", refuse)
    with pytest.raises(koji.ParameterError, match="option 'arches'"):
        run(plugin, hub, "--nowait", TARGET, SCM_URL, "host.yaml")


# --- the installed koji executable, over real XML-RPC/HTTP -----------------------------------


def koji_executable() -> list[str]:
    """The stock koji script, run by this interpreter (so its sys.prefix is ours)."""
    scripts = [
        file.locate()
        for file in importlib.metadata.distribution("koji").files or []
        if file.name == "koji" and "bin" in file.parts
    ]
    scripts.append(Path(sys.prefix) / "bin" / "koji")
    for script in scripts:
        if Path(script).is_file():
            return [sys.executable, str(script)]
    pytest.fail("the koji CLI script of the koji package was not found")


def koji_cli(tmp_path, server_url, *args, plugin_paths=True):
    """Run the stock koji executable with a private HOME and a profile for server_url."""
    config = tmp_path / "koji.conf"
    config.write_text(
        "[hostimage-test]\n"
        f"server = {server_url}/kojihub\n"
        f"weburl = {server_url}/koji\n"
        f"topurl = {server_url}/kojifiles\n"
        "authtype = noauth\n"
        "poll_interval = 0\n"
    )
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [*koji_executable(), "-c", str(config), "-p", "hostimage-test"]
    if plugin_paths:
        argv += ["--plugin-paths", str(PLUGIN_DIR)]
    return subprocess.run(
        argv + list(args), capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )


def test_koji_help_lists_and_documents_the_command(tmp_path):
    result = koji_cli(tmp_path, "http://127.0.0.1:9", "hostimage-build", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "Usage: koji hostimage-build [options] <target> <scm_url> <treefile>"
    )
    for flag in ("--arch=ARCH", "--failable-arch", "--scratch", "--skip-tag", "--nowait"):
        assert flag in result.stdout
    listing = koji_cli(tmp_path, "http://127.0.0.1:9", "help", "build")
    assert listing.returncode == 0, listing.stderr
    assert "hostimage-build" in listing.stdout and "OSTree host image" in listing.stdout


def test_koji_cli_over_xmlrpc_nowait(tmp_path):
    hub = StandInHub()
    with FakeHubServer(hub) as server:
        result = koji_cli(
            tmp_path,
            server.url,
            "hostimage-build",
            "--nowait",
            "--scratch",
            "--arch",
            "x86_64",
            "--priority",
            "4",
            TARGET,
            SCM_URL,
            "host.yaml",
        )
    assert result.returncode == 0, result.stderr
    task_id = min(hub.tasks)
    assert result.stdout.splitlines() == [
        f"Created task: {task_id}",
        f"Task info: {server.url}/koji/taskinfo?taskID={task_id}",
    ]
    # through koji's XML-RPC encoding, keyword arguments included
    assert sent(hub) == (
        (TARGET, SCM_URL, "host.yaml", {"scratch": True, "arches": ["x86_64"]}),
        {"priority": 4},
    )


def test_koji_taskinfo_shows_the_request_parameters(tmp_path):
    # Stock `koji taskinfo` prints parameters only for methods it knows; the plugin
    # teaches it both of ours (and koji.taskLabel the signatures).
    hub = StandInHub(parent_states=["CLOSED"], child_states=["CLOSED"])
    parent = hub.rpc_hostImageBuild(TARGET, SCM_URL, "os/host.yaml",
                                    {"scratch": True, "repo": ["https://r.example/"]})
    with FakeHubServer(hub) as server:
        result = koji_cli(tmp_path, server.url, "taskinfo", "-r", "-v", str(parent))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Request Parameters:\n  Build Target: f42-hostimage\n" in out
    assert f"  SCM URL: {SCM_URL}\n  Treefile: os/host.yaml\n" in out
    assert "  Option repo: ['https://r.example/']\n  Option scratch: True\n" in out
    assert "Type: createHostImage" in out and "  Arch: x86_64\n" in out  # the child
    assert "Unable to parse task parameters" not in out


def test_the_plugin_registers_the_task_signatures_for_labels(plugin):
    task = {"method": "hostImageBuild", "arch": "noarch",
            "request": [TARGET, SCM_URL, "host.yaml", {}]}
    assert koji.taskLabel(task) == "hostImageBuild (noarch)"
    assert "hostImageBuild" in koji.tasks.LEGACY_SIGNATURES
    assert koji.tasks.parse_task_params("hostImageBuild", task["request"])["url"] == SCM_URL


def test_koji_cli_over_xmlrpc_unknown_method(tmp_path):
    with FakeHubServer(StandInHub(has_plugin=False)) as server:
        result = koji_cli(tmp_path, server.url, "hostimage-build", TARGET, SCM_URL, "h.yaml")
    assert result.returncode == 1
    assert "the hub does not have the hostimage plugin installed" in result.stderr
    assert "Created task" not in result.stdout


def test_koji_cli_over_xmlrpc_watch_failure_exit_code(tmp_path):
    hub = StandInHub(parent_states=["FREE", "OPEN", "FAILED"], child_states=["FAILED"])
    with FakeHubServer(hub) as server:
        result = koji_cli(
            tmp_path, server.url, "hostimage-build", "--wait", TARGET, SCM_URL, "host.yaml"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hostImageBuild (noarch) failed" in result.stdout
    assert "Relevant logs:" in result.stdout  # koji_cli listed the task's logs via topurl


def installed_plugin_file() -> Path | None:
    """The plugin file `pip install .` put where koji's load_plugins looks, if any."""
    try:
        dist = importlib.metadata.distribution("koji-hostimage")
    except importlib.metadata.PackageNotFoundError:
        return None
    direct_url = dist.read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        return None
    scanned = Path(sysconfig.get_paths()["purelib"]) / "koji_cli_plugins" / "hostimage.py"
    return scanned if scanned.is_file() else None


def test_installed_package_gives_koji_the_command(tmp_path):
    """After a normal `pip install .`, the stock koji CLI has the command, no flags needed.

    An editable install cannot ship it: setuptools' editable wheels leave data_files out
    (editable_wheel looks for Distribution.has_data, which does not exist), so with
    `pip install -e .` use `--plugin-paths plugins/cli` or ~/.koji/plugins (koji-admin.md).
    """
    installed = installed_plugin_file()
    if installed is None:
        pytest.skip("koji-hostimage is not installed non-editable (pip install .)")
    assert installed.read_text() == (PLUGIN_DIR / "hostimage.py").read_text()
    result = koji_cli(
        tmp_path, "http://127.0.0.1:9", "hostimage-build", "--help", plugin_paths=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: koji hostimage-build" in result.stdout
