# SPDX-License-Identifier: GPL-2.0-or-later
"""A throwaway real Koji for the integration run: PostgreSQL, kojihub under Apache
(mod_wsgi + mod_ssl client certificates), kojid with the hostimage plugin, a git daemon.

Everything lives under one temporary directory; every process started here is stopped
by ``KojiEnv.close()`` (also after a failure), which also undoes the few host changes
kojid forces on us (see ``HostChanges``). The deployment follows upstream koji:

- database: ``schemas/schema.sql`` and the admin user as docs/source/server_howto.rst
  ("Bootstrapping the Koji Admin Account") inserts it;
- hub: kojihub/app/httpd.conf (``/kojihub`` -> kojihub/app/kojiapp.py, the
  ``kojixmlrpc.application`` WSGI entry; ``/kojifiles`` -> the topdir) and
  kojihub/app/hub.conf, read through ``SetEnv koji.hub.ConfigFile`` (kojixmlrpc
  ``load_config``); SSL client-certificate login as kojihub/auth.py ``sslLogin`` reads it
  (``SSL_CLIENT_VERIFY``, ``SSL_CLIENT_S_DN_CN``);
- builder: builder/kojid with its own kojid.conf (``get_options``), run in the foreground.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[2]
MOCK_STANDIN = HERE / "mock_standin"
MULTILIB_STANDIN = HERE / "multilib_standin"
SYSTEM_PYTHON = "/usr/bin/python3"  # kojid and mod_wsgi use Debian's python (dnf, rpm)
PG_BIN = Path("/usr/lib/postgresql/15/bin")
APACHE_MODULES = Path("/usr/lib/apache2/modules")
WWW_USER = "www-data"

ADMIN = "kojiadmin"
USER = "kojiuser"
BUILDER = "builder.localhost"  # the kojid host's name: its certificate's CN
KOJIRA = "kojira"  # kojihub's RepoQueueUser default: the user serving repo requests

# Files kojid insists on (builder/kojid has no option for them), see HostChanges.
MOCK_CONFIG_DIR = Path("/etc/mock/koji")  # BuildRoot._writeMockConfig
MOCK_PATH = Path("/usr/bin/mock")  # BuildRoot.mock: options.mockpath is not a kojid.conf key
BUILDER_PLUGIN_CONF = Path("/etc/kojid/plugins/hostimage.conf")  # plugin's CONFIG_FILE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(argv: Sequence[str | os.PathLike[str]], *, check: bool = True, user: str | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (as ``user`` through runuser), capture its output; a failure shows it."""
    args = [str(a) for a in argv]
    if user:
        args = ["runuser", "-u", user, "--", *args]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)
    if check and proc.returncode:
        raise RuntimeError(
            f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (kojid's task processes call setpgrp, so a process
    group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(data[data.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Stop ``proc`` and everything below it: ``sig`` first, SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *descendants(proc.pid), *pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@dataclass
class HostChanges:
    """Files outside the temporary directory that kojid needs, undone in reverse order."""

    undo: list[Callable[[], None]] = field(default_factory=list)

    def ensure_dir(self, path: Path) -> None:
        missing = []
        for parent in [path, *path.parents]:
            if parent.exists():
                break
            missing.append(parent)
        path.mkdir(parents=True, exist_ok=True)
        for made in reversed(missing):  # undone last-in first-out: innermost first
            self.undo.append(lambda p=made: _rmdir_if_empty(p))

    def put_file(self, path: Path, text: str) -> None:
        self.ensure_dir(path.parent)
        backup = path.read_bytes() if path.exists() else None
        path.write_text(text, encoding="utf-8")
        self.undo.append(lambda: path.write_bytes(backup) if backup is not None
                         else path.unlink(missing_ok=True))

    def symlink(self, path: Path, target: Path) -> None:
        if path.is_symlink() and Path(os.readlink(path)) == target:
            return
        if path.exists() or path.is_symlink():
            raise RuntimeError(f"{path} exists: refusing to replace it with the mock stand-in")
        path.symlink_to(target)
        self.undo.append(lambda: path.unlink(missing_ok=True))

    def ensure_group(self, name: str) -> None:
        try:
            grp.getgrnam(name)
        except KeyError:
            run(["groupadd", "-r", name])
            self.undo.append(lambda: run(["groupdel", name], check=False))

    def remove_matching(self, directory: Path, pattern: str) -> None:
        self.undo.append(lambda: [p.unlink() for p in directory.glob(pattern)])

    def close(self) -> None:
        while self.undo:
            with contextlib.suppress(Exception):
                self.undo.pop()()


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


class KojiEnv:
    """A running Koji: ``start()`` brings everything up, ``close()`` tears it down."""

    def __init__(self, koji_src: Path, tag_prefix: str = "hi-it"):
        self.koji_src = Path(koji_src).resolve()
        self.prefix = tag_prefix
        self.base = Path(tempfile.mkdtemp(prefix="koji-it-", dir="/var/tmp"))
        self.base.chmod(0o755)  # postgres and www-data walk through it
        self.host_changes = HostChanges()
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg_data = self.base / "pg" / "data"
        self.pg_sock = self.base / "pg" / "sock"
        self.pg_port = free_port()
        self.https_port = free_port()
        self.http_port = free_port()
        self.git_port = free_port()
        self.pki = self.base / "pki"
        self.topdir = self.base / "koji"
        self.hub_url = f"https://127.0.0.1:{self.https_port}/kojihub"
        self.topurl = f"http://127.0.0.1:{self.http_port}/kojifiles"
        self.git_root = self.base / "git"
        self.home = self.base / "home"  # HOME of the koji CLI: no ~/.koji of the caller
        self.log_dir = self.base / "logs"
        self.log_dir.mkdir()
        self.started: list[str] = []

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.make_pki()
        self.start_postgres()
        self.start_hub()
        self.start_git_daemon()
        self.bootstrap_objects()
        self.start_kojid()
        self.start_kojira()

    def close(self) -> None:
        for name in ("kojira", "kojid", "git-daemon"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_tree(proc)
        proc = self.procs.pop("apache", None)
        if proc is not None:
            # apache2 stops its children (and mod_wsgi's daemons) on SIGTERM.
            stop_tree(proc, grace=15)
        if "postgres" in self.started:
            run([PG_BIN / "pg_ctl", "-D", self.pg_data, "-m", "immediate", "-w", "stop"],
                user="postgres", check=False)
        self.host_changes.close()
        if os.environ.get("KOJI_IT_KEEP"):
            print(f"KOJI_IT_KEEP: left {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # -------------------------------------------------------------- certificates
    def make_pki(self) -> None:
        """A throwaway CA, the server's certificate and client certificates whose CN is
        the Koji user (kojihub DNUsernameComponent = CN)."""
        pki = self.pki
        pki.mkdir()
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/O=koji-it/CN=koji-it CA", "-keyout", pki / "ca.key",
             "-out", pki / "ca.crt"])
        self._cert("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        for name in (ADMIN, USER, BUILDER, KOJIRA):
            self._cert(name, name, "extendedKeyUsage=clientAuth")
            pem = pki / f"{name}.pem"  # koji's cert option: certificate and key in one file
            pem.write_text((pki / f"{name}.crt").read_text() + (pki / f"{name}.key").read_text())

    def _cert(self, name: str, cn: str, ext: str) -> None:
        pki = self.pki
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
             f"/O=koji-it/CN={cn}", "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.csr"])
        extfile = pki / f"{name}.ext"
        extfile.write_text(ext + "\n")
        run(["openssl", "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.crt",
             "-CAkey", pki / "ca.key", "-CAcreateserial", "-days", "2", "-extfile", extfile,
             "-out", pki / f"{name}.crt"])

    # -------------------------------------------------------------- database
    def start_postgres(self) -> None:
        """A private cluster (initdb refuses root: it runs as ``postgres``), reachable on
        a unix socket in the temp dir only; ``trust`` auth for local connections."""
        self.pg_data.mkdir(parents=True)
        self.pg_sock.mkdir()
        shutil.chown(self.pg_data.parent, "postgres")
        shutil.chown(self.pg_data, "postgres")
        shutil.chown(self.pg_sock, "postgres")
        run([PG_BIN / "initdb", "-D", self.pg_data, "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"], user="postgres")
        options = f"-k {self.pg_sock} -p {self.pg_port} -c listen_addresses="
        run([PG_BIN / "pg_ctl", "-D", self.pg_data, "-o", options, "-l",
             self.pg_data.parent / "postgres.log", "-w", "start"], user="postgres")
        self.started.append("postgres")
        self.psql(["-U", "postgres", "-c", "CREATE ROLE koji LOGIN"])
        self.psql(["-U", "postgres", "-c", "CREATE DATABASE koji OWNER koji"])
        # docs/source/server_howto.rst: "psql koji koji < /usr/share/doc/koji*/docs/schema.sql"
        self.psql(["-U", "koji", "-d", "koji", "-v", "ON_ERROR_STOP=1", "-f",
                   self.koji_src / "schemas" / "schema.sql"])
        # server_howto.rst "Bootstrapping the Koji Admin Account" (ssl auth: no password)
        self.psql(["-U", "koji", "-d", "koji", "-v", "ON_ERROR_STOP=1", "-c",
                   f"INSERT INTO users (name, status, usertype) VALUES ('{ADMIN}', 0, 0);"
                   " INSERT INTO user_perms (user_id, perm_id, creator_id)"
                   " SELECT users.id, permissions.id, users.id FROM users, permissions"
                   f" WHERE users.name = '{ADMIN}' AND permissions.name = 'admin';"])

    def psql(self, args: list[str]) -> str:
        return run(["psql", "-h", self.pg_sock, "-p", str(self.pg_port), "-q", *args],
                   user="postgres").stdout

    # -------------------------------------------------------------- hub
    def hub_conf(self) -> str:
        return f"""\
[hub]
DBName = koji
DBUser = koji
DBHost = {self.pg_sock}
DBPort = {self.pg_port}
KojiDir = {self.topdir}
DNUsernameComponent = CN
LoginCreatesUser = On
KojiWebURL = https://127.0.0.1:{self.https_port}/koji
DisableNotifications = True
PluginPath = {PROJECT / 'plugins' / 'hub'}
Plugins = hostimage
KojiDebug = Off
KojiTraceback = extended
LogLevel = INFO
# the scheduler runs at most every RunInterval seconds (default 60): keep the run short
RunInterval = 2
"""

    def httpd_conf(self) -> str:
        run_dir = self.base / "httpd" / "run"
        kojiapp = self.koji_src / "kojihub" / "app" / "kojiapp.py"
        pythonpath = f"{self.koji_src}:{PROJECT}"
        modules = ["mpm_event", "authz_core", "alias", "mime", "dir", "autoindex", "env",
                   "setenvif", "socache_shmcb", "ssl", "wsgi"]
        loads = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules)
        return f"""\
# kojihub/app/httpd.conf, as its own server instance on 127.0.0.1
ServerRoot {self.base / 'httpd'}
ServerName localhost
{loads}
PidFile {run_dir}/httpd.pid
DefaultRuntimeDir {run_dir}
Mutex file:{run_dir} default
User {WWW_USER}
Group {WWW_USER}
ErrorLog {self.log_dir}/httpd-error.log
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog {self.log_dir}/httpd-access.log common
TypesConfig /etc/mime.types
Listen 127.0.0.1:{self.https_port} https
Listen 127.0.0.1:{self.http_port} http
SSLSessionCache shmcb:{run_dir}/ssl_scache(512000)
WSGISocketPrefix {run_dir}/wsgi
WSGIDaemonProcess koji user={WWW_USER} group={WWW_USER} processes=4 threads=1 \\
    python-path={pythonpath} display-name=kojihub-it
WSGIRestrictEmbedded On

<Directory />
    AllowOverride None
    Require all denied
</Directory>

<VirtualHost 127.0.0.1:{self.https_port}>
    SSLEngine on
    SSLCertificateFile {self.pki}/server.crt
    SSLCertificateKeyFile {self.pki}/server.key
    SSLCACertificateFile {self.pki}/ca.crt
    # httpd.conf has "SSLVerifyClient require" in <Location /kojihub/ssllogin>; a
    # per-location renegotiation does not work with TLS 1.3 clients, so ask for the
    # certificate in the handshake (optional: anonymous calls still work).
    SSLVerifyClient optional
    SSLVerifyDepth 10
    SSLOptions +StdEnvVars
    SetEnv koji.hub.ConfigFile {self.base}/hub/hub.conf
    SetEnv koji.hub.ConfigDir {self.base}/hub/hub.conf.d
    WSGIScriptAlias /kojihub {kojiapp}
    <Directory "{kojiapp.parent}">
        WSGIProcessGroup koji
        WSGIApplicationGroup %{{GLOBAL}}
        WSGIScriptReloading Off
        Require all granted
    </Directory>
</VirtualHost>

<VirtualHost 127.0.0.1:{self.http_port}>
    # "Also serve /mnt/koji": the topurl kojid and the buildroots download from
    Alias /kojifiles "{self.topdir}/"
    <Directory "{self.topdir}">
        Options Indexes FollowSymLinks
        AllowOverride None
        Require all granted
    </Directory>
</VirtualHost>
"""

    def start_hub(self) -> None:
        hub_dir = self.base / "hub"
        (hub_dir / "hub.conf.d").mkdir(parents=True)
        (hub_dir / "hub.conf").write_text(self.hub_conf())
        (self.base / "httpd" / "run").mkdir(parents=True)
        # server_howto.rst: the topdir's subdirectories, owned by the web server's user
        for sub in ("packages", "repos", "work", "scratch", "repos-dist"):
            (self.topdir / sub).mkdir(parents=True)
        run(["chown", "-R", f"{WWW_USER}:{WWW_USER}", self.topdir])
        conf = self.base / "httpd" / "httpd.conf"
        conf.write_text(self.httpd_conf())
        run(["/usr/sbin/apache2", "-f", conf, "-t"])
        log = open(self.log_dir / "apache2.out", "w")  # noqa: SIM115 (kept for the process)
        self.procs["apache"] = subprocess.Popen(
            ["/usr/sbin/apache2", "-f", str(conf), "-DFOREGROUND"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_for(lambda: self.koji(["moshimoshi"], check=False).returncode == 0,
                      "the hub answering moshimoshi", 60)

    # -------------------------------------------------------------- CLI
    def cli_config(self, user: str) -> Path:
        path = self.base / "cli" / f"{user}.conf"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"""\
[koji]
server = {self.hub_url}
weburl = https://127.0.0.1:{self.https_port}/koji
topurl = {self.topurl}
authtype = ssl
cert = {self.pki}/{user}.pem
serverca = {self.pki}/ca.crt
plugin_paths = {PROJECT / 'plugins' / 'cli'}
poll_interval = 2
""")
        return path

    def cli_env(self) -> dict[str, str]:
        self.home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KOJI")}
        env.update(HOME=str(self.home), LC_ALL="C.UTF-8",
                   PYTHONPATH=f"{self.koji_src}:{self.koji_src / 'cli'}:{PROJECT}")
        return env

    def koji(self, args: Sequence[str | os.PathLike[str]], user: str = ADMIN,
             check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """The stock koji CLI of the checkout ($KOJI_SRC/cli/koji), as ``user``."""
        argv = [SYSTEM_PYTHON, self.koji_src / "cli" / "koji", "-c", self.cli_config(user),
                *args]
        return run(argv, env=self.cli_env(), check=check, timeout=timeout)

    def session(self, user: str = ADMIN):
        """A logged-in koji.ClientSession (the checkout's koji library is imported)."""
        import koji  # the caller put the checkout first on sys.path

        session = koji.ClientSession(self.hub_url, {"serverca": str(self.pki / "ca.crt")})
        session.gssapi_login = None
        session.ssl_login(cert=str(self.pki / f"{user}.pem"),
                          serverca=str(self.pki / "ca.crt"))
        return session

    # -------------------------------------------------------------- git
    def start_git_daemon(self) -> None:
        self.git_root.mkdir()
        log = open(self.log_dir / "git-daemon.log", "w")  # noqa: SIM115
        self.procs["git-daemon"] = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={self.git_root}",
             "--listen=127.0.0.1", f"--port={self.git_port}", "--verbose", str(self.git_root)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_for(lambda: _port_open(self.git_port), "git daemon", 30)

    def git_repo(self, name: str) -> Path:
        work = self.base / "git-work" / name
        work.mkdir(parents=True)
        run(["git", "init", "-q", "-b", "main", work])
        return work

    def git_commit(self, work: Path, message: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "koji-it", "GIT_AUTHOR_EMAIL": "it@localhost",
               "GIT_COMMITTER_NAME": "koji-it", "GIT_COMMITTER_EMAIL": "it@localhost"}
        run(["git", "-C", work, "add", "-A"], env=env)
        run(["git", "-C", work, "commit", "-q", "-m", message], env=env)
        bare = self.git_root / f"{work.name}.git"
        if not bare.exists():
            run(["git", "clone", "-q", "--bare", work, bare])
        else:
            run(["git", "-C", work, "push", "-q", str(bare), "main"])
        return run(["git", "-C", work, "rev-parse", "HEAD"]).stdout.strip()

    def scm_url(self, work: Path, commit: str) -> str:
        return f"git://127.0.0.1:{self.git_port}/{work.name}.git#{commit}"

    # -------------------------------------------------------------- koji objects
    def bootstrap_objects(self) -> None:
        """The builder host and its channels, and the user who builds images."""
        self.koji(["add-host", BUILDER, self.arch()])
        self.koji(["edit-host", "--capacity", "8", BUILDER])
        # newRepo tasks go to the createrepo channel (kojihub repo_init / regen-repo)
        self.koji(["add-host-to-channel", BUILDER, "createrepo"])
        self.koji(["add-host-to-channel", "--new", BUILDER, "image"])
        self.koji(["add-user", USER])
        self.koji(["grant-permission", "image", USER])
        # util/kojira turns repo requests (koji regen-repo in 1.35+) into newRepo tasks
        self.koji(["add-user", KOJIRA])
        self.koji(["grant-permission", "repo", KOJIRA])

    @staticmethod
    def arch() -> str:
        import platform

        return platform.machine()

    # -------------------------------------------------------------- builder
    def kojid_conf(self) -> str:
        return f"""\
[kojid]
server = {self.hub_url}
topurl = {self.topurl}
topdir = {self.topdir}
workdir = {self.base / 'kojid' / 'work'}
mockdir = {self.base / 'kojid' / 'mock'}
; mock runs as root (the stand-in chroots and mounts); kojid still needs the mock group
mockuser = root
cert = {self.pki}/{BUILDER}.pem
serverca = {self.pki}/ca.crt
sleeptime = 2
maxjobs = 5
minspace = 1
log_level = DEBUG
allowed_scms = 127.0.0.1*:/*:no
pluginpath = {PROJECT / 'plugins' / 'builder'}
plugins = hostimage
use_createrepo_c = True
"""

    def start_kojid(self) -> None:
        kdir = self.base / "kojid"
        (kdir / "work").mkdir(parents=True)
        (kdir / "mock").mkdir()
        conf = kdir / "kojid.conf"
        conf.write_text(self.kojid_conf())
        changes = self.host_changes
        changes.ensure_group("mock")  # BuildRoot.mock: os.setgroups([grp.getgrnam('mock')])
        changes.ensure_dir(MOCK_CONFIG_DIR)
        changes.remove_matching(MOCK_CONFIG_DIR, f"{self.prefix}-*.cfg")
        changes.symlink(MOCK_PATH, MOCK_STANDIN)
        changes.put_file(BUILDER_PLUGIN_CONF, "[hostimage]\n"
                         "# written by tests/integration/koji: the portable engine\n"
                         "engine = dnf\n"
                         "compose_timeout = 1800\n"
                         "cancel_grace = 2\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
        env.update(PYTHONPATH=f"{self.koji_src}:{PROJECT}:{MULTILIB_STANDIN}",
                   PATH="/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL="C.UTF-8")
        log = open(self.log_dir / "kojid.log", "w")  # noqa: SIM115
        self.procs["kojid"] = subprocess.Popen(
            [SYSTEM_PYTHON, str(self.koji_src / "builder" / "kojid"), "--fg", "--force-lock",
             "--verbose", "-c", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

        def ready() -> bool:
            if self.procs["kojid"].poll() is not None:
                raise RuntimeError(f"kojid exited:\n{self.log('kojid.log')}")
            out = self.koji(["list-hosts", "--ready", "--quiet"], check=False).stdout
            return BUILDER in out

        self.wait_for(ready, "kojid to report ready", 90)

    def start_kojira(self) -> None:
        """util/kojira: serves the hub's repo request queue (repos.checkQueue) and
        expires old repos; kojid's newRepo tasks make the repos."""
        conf = self.base / "kojira.conf"
        conf.write_text(f"""\
[kojira]
server = {self.hub_url}
topdir = {self.topdir}
cert = {self.pki}/{KOJIRA}.pem
serverca = {self.pki}/ca.crt
logfile = {self.log_dir}/kojira-file.log
sleeptime = 2
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
        env.update(PYTHONPATH=str(self.koji_src), LC_ALL="C.UTF-8")
        log = open(self.log_dir / "kojira.log", "w")  # noqa: SIM115
        self.procs["kojira"] = subprocess.Popen(
            [SYSTEM_PYTHON, str(self.koji_src / "util" / "kojira"), "--fg", "--force-lock",
             "--verbose", "-c", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        time.sleep(2)
        if self.procs["kojira"].poll() is not None:
            raise RuntimeError(f"kojira exited:\n{self.log('kojira.log')}")

    # -------------------------------------------------------------- helpers
    def log(self, name: str, tail: int = 200) -> str:
        path = self.log_dir / name
        if not path.exists():
            return f"({path} missing)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail:])

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(1)
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; httpd log:\n"
                           f"{self.log('httpd-error.log', 60)}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
