"""A class of two on a real JupyterHub: log in, get the course with nbgitpuller, run notebook 01, see only your files.

The test starts JupyterHub on loopback ports with its proxy (configurable-http-proxy, from npm;
QTUTOR_CHP names another binary), DummyAuthenticator (two allowed students) and SimpleLocalProcessSpawner
(every student's server is a process of this user, in its own home folder under a temporary directory).
Each student logs in through the hub's login form, starts a server, pulls the course into it with
nbgitpuller from a local git repository, opens notebook 01 through the Jupyter server REST API and
executes every code cell over the kernel's websocket, all through the hub's proxy. A sampler records
the memory of each student's server and kernel; the figures go to build/hub/report.json.

The hub, the proxy and both servers are stopped when the module ends, passed or failed; anything that
outlives the hub's own shutdown is killed and reported as an error. Run alone: ``pytest -m hub tests/hub``.
SimpleLocalProcessSpawner isolates students by folder only (they are one Unix user): it proves the
course works through a hub, not that students are protected from each other; README says what does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests
import websocket

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "01_uniform_quantization.ipynb"
STUDENTS = ("ada", "grace")
LOOPBACK = "127.0.0.1"
REPORT = ROOT / "build" / "hub" / "report.json"
HTTP_TIMEOUT = 60  # seconds for any one request
SPAWN_TIMEOUT = 240  # seconds for a student's server to start (about 30 s on a loaded 2-core machine)
CELL_TIMEOUT = 300  # seconds for one notebook cell


def free_port() -> int:
    """A TCP port nobody listens on at the loopback address."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def proxy_binary() -> str:
    """configurable-http-proxy's path; fails (never skips) with what to install when it is missing."""
    found = os.environ.get("QTUTOR_CHP") or shutil.which("configurable-http-proxy")
    if not found or not os.access(found, os.X_OK):
        pytest.fail(
            f"configurable-http-proxy not found ({found or 'not on PATH'}): the hub test needs JupyterHub's "
            "proxy. Install it with "
            "`npm install -g configurable-http-proxy` (.ci/run does this) or set QTUTOR_CHP to its path."
        )
    return found


def hub_config(folder: Path, ports: dict[str, int]) -> str:
    """jupyterhub_config.py for a loopback-only hub whose students live under ``folder``/home."""
    singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
    return f"""
c.JupyterHub.bind_url = "http://{LOOPBACK}:{ports["public"]}"
c.JupyterHub.hub_bind_url = "http://{LOOPBACK}:{ports["hub"]}"
c.ConfigurableHTTPProxy.api_url = "http://{LOOPBACK}:{ports["proxy_api"]}"
c.ConfigurableHTTPProxy.command = [{proxy_binary()!r}]
c.ConfigurableHTTPProxy.pid_file = {str(folder / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{folder / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(folder / "cookie_secret")!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(STUDENTS)!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(folder / "home" / "{username}")!r}
c.Spawner.cmd = [{str(singleuser)!r}]
c.Spawner.args = ["--ServerApp.allow_root=True"]  # CI runs as root; no effect otherwise
c.Spawner.ip = "{LOOPBACK}"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = {SPAWN_TIMEOUT}
c.Spawner.http_timeout = {SPAWN_TIMEOUT}
"""


def course_repository(folder: Path) -> str:
    """A git repository holding the course's notebooks, as an instructor's would; its file:// URL."""
    repository = folder / "course-repo"
    shutil.copytree(ROOT / "notebooks", repository / "notebooks")
    git = ["git", "-C", str(repository), "-c", "user.name=qtutor test", "-c", "user.email=test@localhost"]
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "the course"]):
        subprocess.run(git + command, check=True, capture_output=True, timeout=60)
    return repository.as_uri()


class MemorySampler(threading.Thread):
    """Samples every student's server and kernel resident memory (from /proc, via psutil) until stopped."""

    def __init__(self, hub: psutil.Process, interval: float = 0.2):
        super().__init__(daemon=True)
        self.hub, self.interval, self.stopped = hub, interval, threading.Event()
        self.peak = {name: {"server MB": 0.0, "kernel MB": 0.0, "server + kernel MB": 0.0} for name in STUDENTS}

    def sample(self) -> None:
        for process in self.hub.children(recursive=True):
            try:
                user = process.environ().get("JUPYTERHUB_USER")
                if user not in self.peak or "jupyterhub-singleuser" not in " ".join(process.cmdline()):
                    continue
                server = process.memory_info().rss / 1e6
                kernels = sum(child.memory_info().rss for child in process.children(recursive=True)) / 1e6
            except psutil.Error:  # a process that ended between listing and reading
                continue
            peak = self.peak[user]
            peak["server MB"] = max(peak["server MB"], server)
            peak["kernel MB"] = max(peak["kernel MB"], kernels)
            peak["server + kernel MB"] = max(peak["server + kernel MB"], server + kernels)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sample()
            except psutil.Error:
                pass


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s or if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"JupyterHub exited with code {process.returncode} while waiting for {what}")
        try:
            result = condition()
        except requests.RequestException:
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def stop(hub: subprocess.Popen, started: list[psutil.Process]) -> list[str]:
    """Stop the hub (which stops the servers and the proxy), then kill whatever it left; name the survivors."""
    if hub.poll() is None:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
    survivors = []
    _, alive = psutil.wait_procs(started, timeout=10)
    for process in alive:
        try:
            survivors.append(" ".join(process.cmdline())[:120])
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    return survivors


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running JupyterHub; yields (public URL, folder, memory sampler). Everything it started is stopped after."""
    folder = tmp_path_factory.mktemp("hub")
    ports = {name: free_port() for name in ("public", "hub", "proxy_api")}
    (folder / "jupyterhub_config.py").write_text(hub_config(folder, ports))
    log = (folder / "jupyterhub.log").open("w")
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(folder / "jupyterhub_config.py")],
        cwd=folder,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://{LOOPBACK}:{ports['public']}"
    sampler, started = None, []
    try:
        wait_for(lambda: requests.get(f"{url}/hub/api/", timeout=5).ok, 120, "the hub's API to answer", process)
        sampler = MemorySampler(psutil.Process(process.pid))
        sampler.start()
        yield url, folder, sampler
    finally:
        if sampler is not None:
            sampler.stopped.set()
        try:
            started = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
        survivors = stop(process, started)
        log.close()
        if survivors:
            tail = (folder / "jupyterhub.log").read_text()[-3000:]
            raise AssertionError(f"killed processes that outlived the hub's shutdown: {survivors}\n{tail}")


class Student:
    """One student's browser-like session with the hub, then token access to their own server."""

    def __init__(self, url: str, name: str):
        self.url, self.name, self.http = url, name, requests.Session()
        self.token = ""

    def log_in(self) -> requests.Response:
        """Fill in the hub's login form (DummyAuthenticator takes any password for an allowed name)."""
        self.http.get(f"{self.url}/hub/login", timeout=HTTP_TIMEOUT).raise_for_status()
        form = {"username": self.name, "password": "any password", "_xsrf": self.http.cookies.get("_xsrf", "")}
        return self.http.post(f"{self.url}/hub/login", data=form, timeout=HTTP_TIMEOUT, allow_redirects=False)

    def request_token(self) -> None:
        """An API token of this student's own, asked for with the login cookie (as the hub's token page does)."""
        response = self.http.post(
            f"{self.url}/hub/api/users/{self.name}/tokens",
            json={"note": "hub test", "expires_in": 3600},
            headers={"X-XSRFToken": self.http.cookies.get("_xsrf", "")},
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()
        self.token = response.json()["token"]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request with this student's token to ``path`` under the hub's public URL."""
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=HTTP_TIMEOUT, **kwargs)

    def start_server(self) -> None:
        response = self.api("POST", f"/hub/api/users/{self.name}/server")
        assert response.status_code in (201, 202), f"{self.name}: starting the server answered {response.status_code}"

    def wait_until_ready(self) -> None:
        def ready():
            servers = self.api("GET", f"/hub/api/users/{self.name}").json().get("servers", {})
            return servers.get("", {}).get("ready")

        wait_for(ready, SPAWN_TIMEOUT, f"{self.name}'s server to be ready")

    def server(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request to this student's own Jupyter server, through the hub's proxy."""
        return self.api(method, f"/user/{self.name}/{path}", **kwargs)

    def pull_course(self, repository: str) -> list[dict]:
        """nbgitpuller's API on the student's server: clone the course into ~/qtutor; the events it streamed."""
        query = f"repo={quote(repository, safe='')}&branch=main&targetpath=qtutor"
        response = self.server("GET", f"git-pull/api?{query}", stream=True)
        response.raise_for_status()
        events = [
            json.loads(line[len("data: ") :])
            for line in response.iter_lines(decode_unicode=True)
            if line.startswith("data: ")
        ]
        assert events and events[-1].get("phase") == "finished", f"nbgitpuller for {self.name}: {events[-3:]}"
        return events

    def run_notebook(self, path: str) -> list[dict]:
        """Open ``path`` (contents API), start its kernel (sessions API), run each code cell over the websocket.

        Returns one list of output messages per code cell.
        """
        opened = self.server("GET", f"api/contents/{quote(path)}")
        opened.raise_for_status()
        cells = [cell for cell in opened.json()["content"]["cells"] if cell["cell_type"] == "code"]
        session = self.server(
            "POST", "api/sessions", json={"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
        )
        session.raise_for_status()
        kernel = session.json()["kernel"]["id"]
        socket_url = self.url.replace("http://", "ws://") + f"/user/{self.name}/api/kernels/{kernel}/channels"
        channel = websocket.create_connection(
            socket_url, header=[f"Authorization: token {self.token}"], timeout=CELL_TIMEOUT
        )
        try:
            return [execute(channel, "".join(cell["source"])) for cell in cells]
        finally:
            channel.close()
            self.server("DELETE", f"api/sessions/{session.json()['id']}")


def execute(channel: websocket.WebSocket, code: str) -> list[dict]:
    """Send one execute_request on a kernel websocket (Jupyter's JSON protocol); its outputs once it is idle.

    Outputs are the stream, result, display and error messages the request caused, as dicts with a "type".
    """
    message_id, outputs = uuid.uuid4().hex, []
    channel.send(
        json.dumps(
            {
                "header": {
                    "msg_id": message_id,
                    "msg_type": "execute_request",
                    "username": "",
                    "session": "hub-test",
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "buffers": [],
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    while True:
        frame = channel.recv()
        if isinstance(frame, bytes):  # a message with binary buffers: the widgets' image data, never a status
            continue
        message = json.loads(frame)
        if message.get("parent_header", {}).get("msg_id") != message_id or message["channel"] != "iopub":
            continue
        kind = message["msg_type"]
        if kind in ("stream", "execute_result", "display_data", "error"):
            outputs.append({"type": kind, **message["content"]})
        elif kind == "status" and message["content"]["execution_state"] == "idle":
            return outputs


@pytest.fixture(scope="module")
def students(hub):
    """Both students logged in, each with a running server holding the course (pulled by nbgitpuller)."""
    url, folder, _ = hub
    repository = course_repository(folder)
    class_ = [Student(url, name) for name in STUDENTS]
    for student in class_:
        response = student.log_in()
        assert response.status_code == 302, f"{student.name}: login answered {response.status_code}"
        student.request_token()
        student.start_server()
    for student in class_:
        student.wait_until_ready()
        student.pull_course(repository)
    return class_


def test_a_name_not_on_the_class_list_cannot_log_in(hub):
    response = Student(hub[0], "intruder").log_in()
    assert response.status_code != 302 and "jupyterhub-session-id" not in response.cookies


def test_each_student_runs_notebook_01_through_the_hub(students, hub):
    start = time.monotonic()
    for student in students:
        # The server's default URL is JupyterLab.
        landing = student.server("GET", "", allow_redirects=False)
        target = landing.headers.get("Location", "").split("?")[0]
        assert landing.status_code == 302 and target.endswith(f"/user/{student.name}/lab"), target
        outputs = student.run_notebook(f"qtutor/notebooks/{NOTEBOOK}")
        errors = [o for cell in outputs for o in cell if o["type"] == "error"]
        assert not errors, f"{student.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        printed = "".join(o.get("text", "") for cell in outputs for o in cell if o["type"] == "stream")
        assert printed.count("passed") >= 2, f"{student.name}: the exercise checks did not pass: {printed[-500:]}"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "notebook": NOTEBOOK,
        "notebook runs s": round(time.monotonic() - start, 1),
        "peak memory per student": {
            name: {key: round(value) for key, value in peak.items()} for name, peak in hub[2].peak.items()
        },
    }
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    for name, peak in hub[2].peak.items():
        assert peak["kernel MB"] > 100, f"{name}: no kernel memory sampled ({peak}); the sampler missed it"


def test_each_student_sees_only_their_own_files(students, hub):
    home = hub[1] / "home"
    for student in students:
        note = student.server(
            "PUT",
            f"api/contents/{student.name}-notes.txt",
            json={"type": "file", "format": "text", "content": f"{student.name}'s notes"},
        )
        assert note.status_code == 201, f"{student.name}: saving a file answered {note.status_code}"
    for student, other in zip(students, reversed(students), strict=True):
        listing = {item["name"] for item in student.server("GET", "api/contents").json()["content"]}
        assert listing == {"qtutor", f"{student.name}-notes.txt"}, f"{student.name} sees {listing}"
        assert (home / student.name / f"{student.name}-notes.txt").is_file()
        assert not (home / other.name / f"{student.name}-notes.txt").exists()
        # A student's token opens no one else's server.
        assert student.api("GET", f"/user/{other.name}/api/contents").status_code == 403
