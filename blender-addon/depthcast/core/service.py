"""Starting and stopping a local ``depthcast serve`` for the user ("start a local service").

The add-on picks a free loopback port itself and passes ``--port``, so it never has to parse the
service's output to learn where it listens. Output goes to a log file the panel can point at.
The process is stopped when the add-on unregisters or Blender exits (atexit).
"""
import atexit
import dataclasses
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def build_command(command, port, host="127.0.0.1", models_dir="", model="", token="", extra=""):
    """The argv of the service. ``command`` is how to run the CLI (``depthcast``, or
    ``node /path/to/bin/depthcast.js``), split like a shell would."""
    argv = shlex.split(command, posix=(os.name != "nt")) if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("no command to start the service with")
    argv += ["serve", "--host", host, "--port", str(port)]
    if models_dir:
        argv += ["--models-dir", models_dir]
    if model:
        argv += ["--model", model]
    if token:
        argv += ["--token", token]
    if extra:
        argv += shlex.split(extra, posix=(os.name != "nt"))
    return argv


#: The add-on's default "Command": what the README tells users to type in the package folder.
DEFAULT_COMMAND = "npx depthcast"
#: Written into the add-on zip by build_zip.mjs: the depthcast folder the zip was built from.
PACKAGE_ROOT_FILE = "depthcast_root.txt"


def shipped_package_root(addon_dir):
    """The depthcast folder recorded in the add-on at build time, when it still holds the CLI."""
    try:
        with open(os.path.join(addon_dir, PACKAGE_ROOT_FILE), encoding="utf-8") as f:
            root = f.read().strip()
    except OSError:
        return ""
    return root if root and os.path.isfile(os.path.join(root, "bin", "depthcast.js")) else ""


def resolve_command(command, package_root="", which=shutil.which):
    """The command that starts the CLI, as a string for build_command.

    ``npx depthcast`` (the default) and a bare ``depthcast`` only work in the package folder or
    after ``npm link``; Blender runs elsewhere and npx would look for the name on the registry.
    So for those two the add-on runs ``node <package root>/bin/depthcast.js`` when it knows the
    package folder, then a ``depthcast`` on PATH. Any other command is used as written.
    """
    argv = shlex.split(command, posix=(os.name != "nt")) if command else []
    if argv not in (["npx", "depthcast"], ["depthcast"], []):
        return command
    if package_root:
        node = which("node") or "node"
        return " ".join(shlex.quote(a) for a in (node, os.path.join(package_root, "bin", "depthcast.js")))
    if which("depthcast"):
        return "depthcast"
    raise RuntimeError("cannot find the depthcast CLI: set the add-on's Command preference to "
                       "'node /path/to/depthcast/bin/depthcast.js' (or run 'npm link' in the depthcast folder)")


def wait_for_port(host, port, timeout, proc=None):
    """True once something accepts TCP connections on host:port; False on timeout or if
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@dataclasses.dataclass(eq=False)
class LocalService:
    """One child process running the service."""

    argv: list
    host: str
    port: int
    log_path: str = None
    env: dict = None
    cwd: str = None
    proc: subprocess.Popen = dataclasses.field(default=None, init=False)
    _log: object = dataclasses.field(default=None, init=False, repr=False)
    _lock: object = dataclasses.field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self.argv = list(self.argv)  # a copy: the caller's list is only borrowed

    @property
    def url(self):
        return "ws://%s:%d/v1/ws" % (self.host, self.port)

    def start(self):
        with self._lock:
            if self.running:
                return self
            if self.log_path:
                os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
                self._log = open(self.log_path, "ab")
            kwargs = {}
            if os.name == "nt":
                kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            else:
                kwargs["start_new_session"] = True
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log or subprocess.DEVNULL,
                                             stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, **kwargs)
            except OSError as err:
                self._close_log()
                raise RuntimeError("could not start %r: %s" % (self.argv[0], err.strerror or err)) from None
            _live.add(self)
            return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, timeout=60.0):
        return wait_for_port(self.host, self.port, timeout, self.proc)

    def log_tail(self, limit=2000):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=5.0):
        """Asks the service to stop (SIGTERM / CTRL_BREAK), then kills it after ``timeout``."""
        with self._lock:
            proc, self.proc = self.proc, None
            _live.discard(self)
            if proc is not None and proc.poll() is None:
                try:
                    proc.terminate()
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    try:
                        proc.wait(2.0)
                    except subprocess.TimeoutExpired:
                        pass
                except OSError:
                    pass
            self._close_log()

    def _close_log(self):
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
            self._log = None


_live = set()


@atexit.register
def _stop_all():
    for svc in list(_live):
        svc.stop(timeout=3.0)


def python_command():
    """Quoted path of this interpreter (for tests that fake the service with a Python script)."""
    return shlex.quote(sys.executable)
