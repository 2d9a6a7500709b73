# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage report`: manifests from a directory, a pungi images.json and a Koji
hub, package diffs between consecutive builds, skipped bad manifests, and the HTML page
checked in a real browser (Debian's headless Chromium).

The five builds are real builds of the example content through the whole local
pipeline. The Koji hub is the one stand-in here (`StandInKojiSession`: kojihub cannot
be installed); the files it points at are served over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import koji
import productmd.images
import pytest

from koji_hostimage.commands.main import main as cli_main
from koji_hostimage.errors import HostImageError
from koji_hostimage.example.content import ExtraPackage, build_example_content
from koji_hostimage.manifest import HostImageManifest
from koji_hostimage.pipeline import BuildRequest, build_host_image
from koji_hostimage.report import sources as manifest_sources
from koji_hostimage.report.page import build_report, render_html

# Five builds with real changes, each step's expected diff derived from its inputs.
SERIES = [
    {"version": "1", "overrides": {}, "extra": [], "omit": []},
    {"version": "2", "overrides": {"greeter": "1.1"}, "extra": [], "omit": []},
    {"version": "3", "overrides": {"greeter": "1.1"}, "extra": ["motd"], "omit": []},
    {"version": "4", "overrides": {"greeter": "1.1"}, "extra": ["motd"],
     "omit": ["host-agent"]},
    {"version": "5", "overrides": {"greeter": "1.0.9"}, "extra": ["motd"],
     "omit": ["host-agent"]},
]


def _extra(name: str) -> ExtraPackage:
    return ExtraPackage(name=name, version="1.0", files={f"/usr/share/{name}/hello": "hi\n"},
                        install=True)


@pytest.fixture(scope="module")
def five_builds(tmp_path_factory) -> Path:
    """Build SERIES with the real pipeline (dnf engine) into one output directory."""
    root = tmp_path_factory.mktemp("report-builds")
    out = root / "builds"
    out.mkdir()
    work_repo = root / "work-repo"
    for step in SERIES:
        content = build_example_content(
            root / f"content-{step['version']}",
            version_overrides=step["overrides"],
            extra_specs=[_extra(n) for n in step["extra"]],
            omit=step["omit"],
        )
        result = build_host_image(BuildRequest(
            treefile=content.treefile, output_dir=out, arch="x86_64", name="example-host",
            version=step["version"], engine="dnf", work_repo=work_repo,
        ))
        assert result.changed and result.archive is not None
    return out


def _report_json(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_report_over_five_builds_has_the_right_diffs(five_builds, tmp_path):
    assert cli_main(["report", "--dir", str(five_builds), "-o", str(tmp_path)]) == 0
    data = _report_json(tmp_path)
    assert [b["version"] for b in data["builds"]] == ["1", "2", "3", "4", "5"]
    assert len({b["commit"] for b in data["builds"]}) == 5
    assert all(b["archive_size"] > 0 for b in data["builds"])
    diffs = [d["packages"] for d in data["diffs"]]
    assert len(diffs) == 4
    assert [c["name"] for c in diffs[0]["upgraded"]] == ["greeter"]
    assert diffs[0]["upgraded"][0]["old"].startswith("1.0-")
    assert diffs[0]["upgraded"][0]["new"].startswith("1.1-")
    assert (diffs[0]["added"], diffs[0]["removed"], diffs[0]["downgraded"]) == ([], [], [])
    assert [n.split("-1.0-")[0] for n in diffs[1]["added"]] == ["motd"]
    assert not diffs[1]["upgraded"]
    assert diffs[2]["removed"] and all("host-agent" in r for r in diffs[2]["removed"])
    assert not diffs[2]["added"]
    assert [c["name"] for c in diffs[3]["downgraded"]] == ["greeter"]
    assert diffs[3]["downgraded"][0]["new"].startswith("1.0.9-")
    counts = [b["package_count"] for b in data["builds"]]
    assert counts[2] == counts[1] + 1 and counts[3] == counts[2] - 1


def test_html_in_a_real_browser(five_builds, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is installed by scripts/setup-debian.sh"
    assert cli_main(["report", "--dir", str(five_builds), "-o", str(tmp_path)]) == 0
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--dump-dom",
         (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert dom.count('<tr class="build">') == 5
    assert dom.count('<svg class="trend"') == 1
    assert dom.count('<polyline class="size"') == 1
    assert dom.count('<circle class="packages"') == 5
    assert dom.count('<h3 class="diff">') == 4
    assert "upgraded greeter.noarch" in dom and "downgraded greeter.noarch" in dom


def _valid_manifest(five_builds: Path) -> dict:
    first = sorted(five_builds.glob("*.hostimage.json"))[0]
    return json.loads(first.read_text())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("commit"), "commit: missing"),
        (lambda d: d.update(timestamp="yesterday"), "timestamp: expected int"),
        (lambda d: d.update(dashboard_colour="red"), "unknown fields: dashboard_colour"),
        (lambda d: d.update(schema_version=99), "schema_version: 99 is newer"),
        (lambda d: d["packages"][0].update(vendor="x"), "packages[0]: unknown fields: vendor"),
        (lambda d: d["packages"][0].pop("version"), "packages[0].version: missing"),
    ],
)
def test_bad_manifests_are_reported_and_skipped(five_builds, tmp_path, change, reason):
    builds = tmp_path / "builds"
    shutil.copytree(five_builds, builds)
    bad = _valid_manifest(five_builds)
    change(bad)
    bad_path = builds / "broken-1-1.x86_64.hostimage.json"
    bad_path.write_text(json.dumps(bad))
    (builds / "garbage.hostimage.json").write_text("{not json")
    entries, skipped = manifest_sources.from_directory(builds)
    assert len(entries) == 5
    by_origin = {s.origin: s.reason for s in skipped}
    assert reason in by_origin[str(bad_path)]
    assert "not valid JSON" in by_origin[str(builds / "garbage.hostimage.json")]
    page = render_html(build_report(entries, skipped))
    assert page.count('<tr class="skipped">') == 2


def test_manifests_from_a_pungi_images_json(five_builds, tmp_path):
    """A compose laid out as pungi does (compose/<variant>/<arch>/images/)."""
    compose = tmp_path / "compose-1"
    image_dir = compose / "compose" / "CoreOS" / "x86_64" / "images"
    image_dir.mkdir(parents=True)
    images = productmd.images.Images()
    images.compose.id = "Test-1-20260101.0"
    images.compose.type = "production"
    images.compose.date = "20260101"
    images.compose.respin = 0
    for archive in sorted(five_builds.glob("*.oci.tar"))[:3]:
        shutil.copy(archive, image_dir / archive.name)  # embedded manifest only
        image = productmd.images.Image(images)
        image.path = f"CoreOS/x86_64/images/{archive.name}"
        image.mtime, image.size = 0, archive.stat().st_size
        image.volume_id, image.type, image.format = None, "ociarchive", "ociarchive"
        image.arch, image.disc_number, image.disc_count = "x86_64", 1, 1
        image.bootable, image.implant_md5, image.subvariant = False, None, "CoreOS"
        image.checksums = {"sha256": "0" * 64}
        images.add("CoreOS", "x86_64", image)
    (compose / "compose" / "metadata").mkdir()
    images.dump(str(compose / "compose" / "metadata" / "images.json"))
    entries, skipped = manifest_sources.from_images_json(compose)
    assert skipped == []
    assert sorted(e.manifest.version for e in entries) == ["1", "2", "3"]
    assert all(e.archive_size and e.manifest.oci is None for e in entries)


class StandInKojiSession:
    """Stands in for a Koji hub (kojihub is not installable): answers the calls
    manifest_sources makes from a directory laid out like Koji's /packages tree."""

    def __init__(self, builds: list[dict], archives: dict[int, list[dict]]):
        self.builds, self.archives = builds, archives
        self.calls: list[tuple] = []

    def getPackageID(self, name):  # noqa: N802 (Koji's API names)
        self.calls.append(("getPackageID", name))
        return 7 if name == "example-host" else None

    def listBuilds(self, packageID=None, state=None):  # noqa: N802,N803
        self.calls.append(("listBuilds", packageID, state))
        return list(self.builds)

    def listArchives(self, buildID=None):  # noqa: N802,N803
        self.calls.append(("listArchives", buildID))
        return self.archives[buildID]

    def getBuild(self, nvr):  # noqa: N802
        return next((b for b in self.builds if b["nvr"] == nvr), None)


@pytest.fixture()
def koji_topdir(five_builds, tmp_path):
    """A Koji-style topdir served over real HTTP on 127.0.0.1."""
    builds, archives = [], {}
    for build_id, path in enumerate(sorted(five_builds.glob("*.hostimage.json")), 1):
        manifest = HostImageManifest.load(path)
        images = (tmp_path / "packages" / manifest.name / manifest.version / manifest.release
                  / "images")
        images.mkdir(parents=True)
        shutil.copy(path, images / path.name)
        builds.append({"id": build_id, "build_id": build_id, "name": manifest.name,
                       "version": manifest.version, "release": manifest.release,
                       "nvr": manifest.nvr})
        archives[build_id] = [
            {"filename": path.name, "size": path.stat().st_size},
            {"filename": manifest.archive_name, "size": manifest.oci.archive_size},
        ]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield StandInKojiSession(builds, archives), f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_manifests_from_koji(koji_topdir):
    session, topurl = koji_topdir
    entries, skipped = manifest_sources.from_koji(session, topurl, "example-host", limit=4)
    assert skipped == []
    assert [e.manifest.version for e in entries] == ["2", "3", "4", "5"]
    assert all(e.archive_size == e.manifest.oci.archive_size for e in entries)
    assert ("listBuilds", 7, 1) in session.calls
    report = build_report(entries)
    assert len(report.diffs) == 3


def test_koji_unknown_package_is_a_clear_error(koji_topdir):
    session, topurl = koji_topdir
    with pytest.raises(HostImageError, match="no package named 'nope'"):
        manifest_sources.from_koji(session, topurl, "nope")


@pytest.fixture()
def koji_hub_url(koji_topdir):
    """The stand-in Koji session behind a real XML-RPC endpoint on 127.0.0.1, so the
    command's real koji.ClientSession talks to it over HTTP."""
    from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

    class Quiet(SimpleXMLRPCRequestHandler):
        rpc_paths = ("/kojihub",)

        def log_message(self, *args):
            pass

    session, topurl = koji_topdir
    server = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Quiet, allow_none=True,
                                logRequests=False)

    class KojiDispatch:
        """Unpacks keyword arguments as kojixmlrpc does (koji.decode_args)."""

        def _dispatch(self, method, params):
            args, kwargs = koji.decode_args(*params)
            return getattr(session, method)(*args, **kwargs)

    server.register_instance(KojiDispatch())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/kojihub", topurl
    server.shutdown()
    server.server_close()


def test_diff_two_koji_builds_by_nvr(koji_hub_url, capsys):
    hub, topurl = koji_hub_url
    code = cli_main(["diff", "example-host-1-1", "example-host-2-1", "--json",
                     "--koji-hub", hub, "--koji-topurl", topurl])
    assert code == 0
    diff = json.loads(capsys.readouterr().out)
    assert (diff["old"]["nvr"], diff["new"]["nvr"]) == ("example-host-1-1", "example-host-2-1")
    assert [c["name"] for c in diff["packages"]["upgraded"]] == ["greeter"]
    assert diff["commit_changed"] is True
    assert diff["archive_size"]["old"] > 0 and diff["archive_size"]["new"] > 0


def test_diff_koji_unknown_build_or_arch(koji_hub_url, caplog):
    hub, topurl = koji_hub_url
    koji_args = ["--koji-hub", hub, "--koji-topurl", topurl]
    assert cli_main(["diff", "example-host-1-1", "nope-1-1", *koji_args]) == 1
    assert "Koji has no build nope-1-1" in caplog.text
    assert cli_main(["diff", "example-host-1-1", "example-host-2-1", "--arch", "s390x",
                     *koji_args]) == 1
    assert "arch 's390x' is not in both builds (common: x86_64)" in caplog.text


# --- hostile manifests (issue 13) ---------------------------------------------------------


def _hostile_manifests(valid: dict) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the skip reason must say)."""

    def changed(change) -> bytes:
        data = json.loads(json.dumps(valid))
        change(data)
        return json.dumps(data).encode()

    return {
        "deep": (b"[" * 100_000 + b"]" * 100_000, "nested 100000 deep"),
        "latin1": (json.dumps(valid).encode()[:-1] + b', "x": "\xe9"}', "expected UTF-8"),
        "future": (changed(lambda d: d.update(timestamp=1e20)), "timestamp: expected int"),
        "past": (changed(lambda d: d.update(timestamp=-10**15)), "timestamp: expected an "
                 "integer from 0"),
        "size": (changed(lambda d: d["oci"].update(archive_size="big")),
                 "oci.archive_size: expected int, got str"),
        "delta": (changed(lambda d: d.update(deltas=[{"from": None, "to": d["commit"],
                                                       "bytes": "x"}])),
                  "deltas[0].bytes: expected int"),
        "name": (changed(lambda d: d["packages"][0].update(name=5)),
                 "packages[0].name: expected str, got int"),
        "version": (changed(lambda d: d["packages"][0].update(version=[1])),
                    "packages[0].version: expected str, got list"),
        "epoch": (changed(lambda d: d["packages"][0].update(epoch="abc")),
                  "packages[0].epoch: expected int or null, got str"),
        "bool": (changed(lambda d: d.update(object_count=True)), "object_count: expected int"),
        "nan": (json.dumps(valid).encode()[:-1] + b', "object_bytes": NaN}', "NaN"),
        "hugeint": (changed(lambda d: d.update(timestamp=0)).replace(
            b'"timestamp": 0', b'"timestamp": 1' + b"0" * 5000), "not valid JSON"),
        "payload": (changed(lambda d: d["packages"][0].update(payloadhash=7)),
                    "packages[0].payloadhash: expected str or null"),
    }


def test_each_bad_manifest_is_skipped_with_a_reason_and_the_page_is_built(
        five_builds, tmp_path):
    builds = tmp_path / "builds"
    shutil.copytree(five_builds, builds)
    hostile = _hostile_manifests(_valid_manifest(five_builds))
    for name, (raw, _) in hostile.items():
        (builds / f"{name}-1-1.x86_64.hostimage.json").write_bytes(raw)
    (builds / "dir-1-1.x86_64.hostimage.json").mkdir()  # not even a file
    out = tmp_path / "report"
    assert cli_main(["report", "--dir", str(builds), "-o", str(out)]) == 0
    report = _report_json(out)
    assert len(report["builds"]) == 5  # only the five real ones
    reasons = {Path(s["origin"]).name.split("-1-1")[0]: s["reason"] for s in report["skipped"]}
    for name, (_, expected) in hostile.items():
        assert expected in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name]
    assert "cannot read" in reasons["dir"]
    assert {Path(b["origin"]).name.split("-1-1")[0] for b in report["builds"]} \
        .isdisjoint(hostile)


def test_manifest_parser_types_every_field(five_builds):
    valid = _valid_manifest(five_builds)
    manifest = HostImageManifest.from_dict(valid)
    assert manifest.source_date_epoch is None  # older manifests: read as null
    valid["source_date_epoch"] = 1700000000
    assert HostImageManifest.from_dict(valid).source_date_epoch == 1700000000
    for key, value in [("source_date_epoch", "now"), ("parent", 5), ("source", []),
                       ("oci", "x"), ("deltas", {}), ("packages", [7])]:
        bad = dict(valid, **{key: value})
        with pytest.raises(Exception) as caught:
            HostImageManifest.from_dict(bad, "m.json")
        assert type(caught.value).__name__ == "ManifestError", key
        assert str(caught.value).startswith("m.json: ")


@pytest.mark.parametrize("blocker", ["file", "html-dir"])
def test_report_output_that_cannot_be_written_is_one_line(five_builds, tmp_path, caplog,
                                                          blocker):
    out = tmp_path / "out"
    if blocker == "file":
        out.write_text("a file\n")
        expected = "expected a directory, got a file"
    else:
        (out / "report.html").mkdir(parents=True)
        expected = "got a directory"
    with caplog.at_level("ERROR", logger="koji_hostimage"):
        assert cli_main(["report", "--dir", str(five_builds), "-o", str(out)]) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert expected in line and "\n" not in line


def test_an_archive_whose_content_fails_its_digest_is_skipped(five_builds, tmp_path):
    """Only the archive, no manifest beside it: its embedded hostimage.json is trusted
    only once the layers match their digests."""
    from koji_hostimage.image.oci_reader import OciArchive

    source = sorted(five_builds.glob("*.oci.tar"))[0]
    with OciArchive(source) as image:
        layer = image.content_layer()
    data = bytearray(source.read_bytes())
    data[layer.offset + layer.size // 2] ^= 0x01
    (tmp_path / source.name).write_bytes(bytes(data))
    entries, skipped = manifest_sources.from_directory(tmp_path)
    assert entries == []
    (skip,) = skipped
    assert "does not match its digest" in skip.reason and source.name in skip.origin
