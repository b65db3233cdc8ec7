#!/usr/bin/env python3
"""Drives the dashboard in a real headless Chromium over the DevTools protocol.

Usage: dashboard_check.py BASE_URL RUNNING_BATCH FAILING_BATCH WORK_DIR

Checks, failing with a message on the first that does not hold:
1. The batches list shows the running batch and its progress advances
   without a page reload (Server-Sent Events, no polling).
2. On the batch page, Pause and Resume change the batch's state.
3. The failing batch's page shows its errors grouped by code.
Saves dashboard-list.png, dashboard-batch.png and dashboard-errors.png in
WORK_DIR. Chromium's profile, HOME and temporary files are in WORK_DIR too, so
the caller removes everything by removing it; nothing goes to /tmp.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import websocket


# How long a wait may take: generous, so that a busy machine (a build beside
# the tests) is not a failure; each wait names what it waited for.
TIMEOUT = 120


class Browser:
    def __init__(self, work):
        # Short names: Chromium's sockets live under TMPDIR, and a Unix
        # socket's path has at most 107 bytes.
        self.profile = os.path.join(work, "p")
        home = os.path.join(work, "h")
        temporary = os.path.join(work, "t")
        for directory in (self.profile, home, temporary):
            os.makedirs(directory, exist_ok=True)
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            sys.exit("chromium is not installed (apt-get install chromium)")
        # Chromium writes beside its profile too (org.chromium.Chromium.* in
        # TMPDIR, caches under HOME): all of it inside the work directory.
        environment = dict(os.environ, HOME=home, TMPDIR=temporary, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "--window-size=1200,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "chromium.log"), "wb"), env=environment)
        self.log = os.path.join(work, "chromium.log")
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + TIMEOUT
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.process.poll() is not None or time.time() > deadline:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
                with open(self.log, errors="replace") as log:
                    tail = "".join(log.readlines()[-20:])
                sys.exit(f"chromium did not start (exit status {self.process.returncode}):\n{tail}")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=TIMEOUT)
        self.next_id = 0
        self.call("Page.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait(self, expression, what, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        fail(f"waited {timeout} s for {what}")

    def open(self, url):
        self.call("Page.navigate", url=url)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        """Asks Chromium to quit, so it removes its own temporary files; kills it
        when it does not exit in time, and reaps it either way."""
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.socket.close()


def fail(message):
    print(f"dashboard check failed: {message}")
    sys.exit(1)


def main():
    base, running, failing, out = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    browser = Browser(out)
    try:
        browser.open(base + "/#/")
        row = f'document.querySelector(\'tr[data-id="{running}"] .pct\')'
        first = float(browser.wait(f"{row} && parseFloat({row}.textContent)", "the running batch in the list") or 0)
        later = browser.wait(f"{row} && parseFloat({row}.textContent) > {first} && parseFloat({row}.textContent)",
                             "the progress to advance")
        if browser.eval("window.trancheLoads") != 1:
            fail("the list page reloaded")
        print(f"list: progress went from {first}% to {later}% without a reload")
        browser.wait("document.querySelector('#nodes tbody') && "
                     "document.querySelector('#nodes tbody').textContent.includes('serve')", "the nodes table")
        print("list: the nodes table shows the serving node")
        browser.screenshot(os.path.join(out, "dashboard-list.png"))

        browser.open(f"{base}/#/batch/{running}")
        browser.wait("!!(document.querySelector('#pause') && document.querySelector('#status'))", "the batch page")
        browser.wait("batchState.samples.length >= 5", "live throughput samples")
        browser.wait("!!document.querySelector('[data-counter=\"pace\"]') && "
                     "document.querySelector('[data-counter=\"pace\"]').textContent.includes('fixed')",
                     "the pace card (a sleep batch runs at a fixed pace)")
        browser.eval("document.querySelector('#pause').click()")
        browser.wait("document.querySelector('#status').textContent === 'paused'", "the paused state")
        browser.wait("document.querySelectorAll('#timeline tr').length > 3", "the timeline")
        time.sleep(0.5)
        browser.screenshot(os.path.join(out, "dashboard-batch.png"))
        browser.eval("document.querySelector('#resume').click()")
        browser.wait("['processing', 'completed'].includes(document.querySelector('#status').textContent)",
                     "the resumed state")
        print("batch page: pause and resume changed the state")

        browser.open(f"{base}/#/batch/{failing}")
        browser.wait("!!document.querySelector('#errors tbody') && "
                     "document.querySelector('#errors tbody').textContent.includes('exit_65')", "the error log")
        browser.screenshot(os.path.join(out, "dashboard-errors.png"))
        print("error log: shows the failing batch's errors")
        print("dashboard checks passed")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
