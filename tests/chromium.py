"""Headless Chromium driven over the DevTools protocol, with the standard library only.

The browser page at /docs is tested in a real browser: Debian's ``chromium``
started headless with ``--remote-debugging-port=0``, reached over the DevTools
websocket (a small RFC 6455 client below: handshake, masked client frames,
fragmented and large server frames, ping/pong).  Every test runs in a fresh
user-data folder, with a proxy setting that sends any host other than 127.0.0.1
to a closed local port, so a request leaving the machine would fail; the page's
requests are also recorded from the Network domain for the tests to check.

``find_chromium()`` returns the binary or None; the tests skip with a reason
when it is missing unless ``MINICOG_REQUIRE_CHROMIUM=1`` (set by .ci/run, which
installs the package), in which case they fail.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Flags that make headless Chromium quiet and self-contained as root in a container.
BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
              "--disable-dev-shm-usage")


def find_chromium() -> Optional[str]:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def closed_port() -> int:
    """A local port nothing listens on (bound then closed): a proxy there fails every request."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebSocket:
    """The client side of RFC 6455, enough for the DevTools protocol (text frames)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (("?" + parts.query) if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        head, _, self._buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self._send_lock = threading.Lock()
        self.sock.settimeout(None)  # the reader thread blocks; closing the socket ends it

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send_text(self, text: str) -> None:
        payload = text.encode("utf-8")
        header = bytearray([0x81])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        with self._send_lock:
            self.sock.sendall(bytes(header) + mask + masked)

    def _send_control(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        with self._send_lock:
            self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + _mask_fast(payload, mask))

    def recv_text(self) -> str:
        """The next whole text message (fragments joined; pings answered)."""
        message = bytearray()
        while True:
            b0, b1 = self._read(2)
            opcode, fin = b0 & 0x0F, b0 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = _mask_fast(payload, mask)
            if opcode == 0x9:
                self._send_control(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            message += payload
            if fin:
                return message.decode("utf-8")

    def close(self) -> None:
        try:
            self._send_control(0x8)
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _mask_fast(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big") if n else b""


class Browser:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, binary: str, *, startup_timeout: float = 60.0):
        self.profile = tempfile.mkdtemp(prefix="minicog-chromium-")
        self.proxy_port = closed_port()
        args = [binary, *BASE_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                # Any host but 127.0.0.1 goes to a closed port: a request leaving the machine fails.
                f"--proxy-server=http://127.0.0.1:{self.proxy_port}", "--proxy-bypass-list=127.0.0.1",
                "--window-size=1280,900", "about:blank"]
        self._log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + startup_timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with open(port_file) as f:
                    lines = f.read().split()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2:
                break
            time.sleep(0.05)
        else:
            self.close()
            raise RuntimeError(f"chromium did not open its DevTools port within {startup_timeout} s: {self.log_tail()}")
        self.ws = WebSocket(f"ws://127.0.0.1:{lines[0]}{lines[1]}")
        self._next = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, "queue.Queue[dict]"] = {}
        self._listeners: list[Callable[[dict], None]] = []
        self._reader = threading.Thread(target=self._read_loop, name="devtools-reader", daemon=True)
        self._reader.start()

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.profile, "chromium.log"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _read_loop(self) -> None:
        try:
            while True:
                msg = json.loads(self.ws.recv_text())
                if "id" in msg:
                    with self._lock:
                        q = self._waiting.pop(msg["id"], None)
                    if q is not None:
                        q.put(msg)
                else:
                    for listener in list(self._listeners):
                        listener(msg)
        except (ConnectionError, OSError, ValueError):
            with self._lock:
                waiting, self._waiting = self._waiting, {}
            for q in waiting.values():
                q.put({"error": {"message": "DevTools connection closed"}})

    def send(self, method: str, params: Optional[dict] = None, *, session: Optional[str] = None,
             timeout: float = 30.0) -> dict:
        """Call a DevTools method and return its result (raises on a protocol error)."""
        q: "queue.Queue[dict]" = queue.Queue()
        with self._lock:
            self._next += 1
            mid = self._next
            self._waiting[mid] = q
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send_text(json.dumps(msg))
        try:
            reply = q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"DevTools {method} did not answer within {timeout} s") from None
        if "error" in reply:
            raise RuntimeError(f"DevTools {method}: {reply['error']}")
        return reply.get("result", {})

    def new_page(self, *, width: int = 1280, height: int = 900, mobile: bool = False,
                 dark: bool = False) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session, width=width, height=height, mobile=mobile, dark=dark)

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                self.send("Browser.close", timeout=5)
            except Exception:
                pass
            ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class JSError(AssertionError):
    pass


class Page:
    """One tab: navigation, JavaScript evaluation, input events, screenshots, its request log."""

    def __init__(self, browser: Browser, target: str, session: str, *, width: int, height: int,
                 mobile: bool, dark: bool):
        self.browser, self.target, self.session = browser, target, session
        self.requests: list[str] = []       # every URL the page asked for
        self.calls: list[dict] = []         # the same requests: {"method", "url", "accept"}
        self.failed: list[dict] = []        # Network.loadingFailed events
        self.console: list[str] = []        # console messages and uncaught exceptions
        self._lock = threading.Lock()
        browser._listeners.append(self._on_event)
        for domain in ("Page", "Runtime", "Network", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        self.send("Emulation.setEmulatedMedia",
                  {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})

    def _on_event(self, msg: dict) -> None:
        if msg.get("sessionId") != self.session:
            return
        method, params = msg.get("method"), msg.get("params", {})
        with self._lock:
            if method == "Network.requestWillBeSent":
                request = params["request"]
                self.requests.append(request["url"])
                accept = next((v for k, v in request.get("headers", {}).items() if k.lower() == "accept"), None)
                self.calls.append({"method": request.get("method"), "url": request["url"], "accept": accept})
            elif method == "Network.loadingFailed":
                self.failed.append(params)
            elif method == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])

    def send(self, method: str, params: Optional[dict] = None, timeout: float = 30.0) -> dict:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def goto(self, url: str, *, timeout: float = 30.0) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout=timeout)

    def reload(self, *, timeout: float = 30.0) -> None:
        self.eval("window.__beforeReload = 1")
        self.send("Page.reload", {"ignoreCache": True})
        self.wait_for("document.readyState === 'complete' && !window.__beforeReload", timeout=timeout)

    def eval(self, expression: str, *, timeout: float = 30.0) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True, "userGesture": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise JSError(f"{expression!r} threw: {json.dumps(result['exceptionDetails'])[:1000]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Poll *expression* until it is truthy; return its value (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.eval(expression)
            except JSError as exc:
                last = str(exc)
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"waited {timeout} s for {expression!r}; last value {last!r}; "
                                     f"console: {self.console[-5:]}")
            time.sleep(interval)

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def set_value(self, selector: str, value: str) -> None:
        """Type *value* into a field as a user would: focus, set, fire input/change."""
        self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus();
            e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input', {{bubbles: true}}));
            e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()""")

    def press(self, key: str, *, code: str, key_code: int, modifiers: int = 0) -> None:
        """A real key press (Input.dispatchKeyEvent); modifiers: 1 Alt, 2 Ctrl, 4 Meta, 8 Shift."""
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code, "modifiers": modifiers,
                                                 "windowsVirtualKeyCode": key_code})

    def set_files(self, selector: str, paths: list[str]) -> None:
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise AssertionError(f"no element matches {selector!r}")
        self.send("DOM.setFileInputFiles", {"nodeId": node, "files": paths})

    def screenshot(self, path: str, *, full_page: bool = True) -> str:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        data = self.send("Page.captureScreenshot", params, timeout=60)["data"]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.browser._listeners.remove(self._on_event)
        except ValueError:
            pass
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target}, timeout=10)
        except Exception:
            pass
