"""Opens a running `personaflow serve`'s dashboard in headless Chromium and reports its DOM.

Usage: dashboard.py CHROMIUM URL USER SCREENSHOT [TOKEN]

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no
client library): loads URL (with `#token=TOKEN` when given), waits until the page says it
has drawn (<body data-ready="true">), reads what each chart drew, looks USER up through the
page's form and waits for the answer, switches the resonance chart to its other measure,
saves a full-page screenshot to SCREENSHOT (PNG, or JPEG if it ends in .jpg) and prints one JSON object of what it found,
with every console error, uncaught exception and refused load (e.g. by the
Content-Security-Policy) the page logged. Every wait is for a condition, with a deadline.
"""

import base64
import fcntl
import signal
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

DEADLINE_S = 90
# The whole run's deadline: a browser that stops answering ends the script, not the suite.
WHOLE_RUN_S = 300
WIDTH, HEIGHT = 1400, 1000


class Browser:
    def __init__(self, chromium, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Chromium reads commands on fd 3 and writes replies on fd 4. Moved out of the
            # way first, so that neither dup2 overwrites the other's source.
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
        self.proc = subprocess.Popen(
            args,
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def _read_message(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression):
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:60]}...: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, what):
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.1)
        raise RuntimeError(f"waited {DEADLINE_S} s for {what}")

    def close(self, graceful=True):
        """Asks the browser to close (or, not graceful, kills it) and waits for it."""
        if graceful:
            try:
                self.call("Browser.close", session=False)
            except Exception:
                pass
        else:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


CHARTS = """(() => {
  const charts = {};
  for (const svg of document.querySelectorAll("svg.plot[data-chart]")) {
    const label = (axis) => {
      const t = svg.querySelector(`text.axis-label[data-axis="${axis}"]`);
      return t ? t.textContent : null;
    };
    charts[svg.dataset.chart] = {
      series: [...svg.querySelectorAll("path.series")].map((p) => p.dataset.series),
      points: Math.max(0, ...[...svg.querySelectorAll("path.series")]
        .map((p) => (p.getAttribute("d").match(/[ML]/g) || []).length)),
      x_label: label("x"),
      y_label: label("y"),
      drift_events: [...svg.querySelectorAll("g.drift-event")]
        .map((g) => ({scope: g.dataset.scope, action: g.dataset.action})),
      personas: [...svg.querySelectorAll("g.persona")].map((g) => Number(g.dataset.persona)),
      width: svg.getBoundingClientRect().width,
    };
  }
  const empty = [...document.querySelectorAll("p.empty[data-chart]")].map((p) => p.dataset.chart);
  return {
    charts,
    empty,
    status: document.getElementById("status").textContent,
    drift_table_rows: document.querySelectorAll("#drift-table tr").length - (document.querySelector("#drift-table tr") ? 1 : 0),
    token_form_hidden: document.getElementById("token-form").hidden,
  };
})()"""


def main():
    def out_of_time(*_):
        raise TimeoutError(f"the browser run took over {WHOLE_RUN_S} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(WHOLE_RUN_S)
    chromium, url, user, screenshot = sys.argv[1:5]
    token = sys.argv[5] if len(sys.argv) > 5 else None
    profile = tempfile.mkdtemp(prefix="personaflow-chromium-")
    browser = Browser(chromium, profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = browser.call(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        browser.session = attached["sessionId"]
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", {"url": url + (f"#token={token}" if token else "")})
        browser.wait_for(
            "document.body && document.body.dataset.ready === 'true'", "the charts"
        )
        found = browser.evaluate(CHARTS)
        found["token_left_in_address"] = browser.evaluate("location.hash.includes('token')")

        # The lookup, through the form as a reader would.
        browser.evaluate(
            "(() => { const i = document.getElementById('user-id'); i.value = %s;"
            " document.getElementById('user-form').requestSubmit(); })()" % json.dumps(user)
        )
        browser.wait_for(
            "!!document.querySelector('#user-result [data-user], #user-result .error')",
            "the looked-up user",
        )
        found["lookup"] = browser.evaluate(
            """(() => {
              const box = document.querySelector('#user-result [data-user]');
              if (!box) return {error: document.querySelector('#user-result').textContent};
              return {
                user: box.dataset.user,
                title: box.querySelector('.user-title').textContent,
                headings: [...box.querySelectorAll('h4')].map((h) => h.textContent),
                bars: [...box.querySelectorAll('rect.bar')].map((r) => r.dataset.segment),
                text: box.textContent,
              };
            })()"""
        )

        # The resonance chart's other measure.
        browser.evaluate("document.getElementById('resonance-top').click()")
        browser.wait_for(
            "(document.querySelector('svg[data-chart=resonance] text.axis-label[data-axis=y]')"
            " || {}).textContent === 'share of top segments'",
            "the resonance chart's other measure",
        )
        found["toggled_y_label"] = "share of top segments"

        metrics = browser.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        jpeg = screenshot.endswith((".jpg", ".jpeg"))
        shot = browser.call(
            "Page.captureScreenshot",
            {
                "format": "jpeg" if jpeg else "png",
                **({"quality": 85} if jpeg else {}),
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        problems = []
        for e in browser.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                problems.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                problems.append(" ".join(str(a.get("value", "")) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                problems.append(p["entry"].get("text", ""))
        found["problems"] = problems
        print(json.dumps(found))
        signal.alarm(0)
        browser.close()
    except BaseException:
        browser.close(graceful=False)
        raise
    finally:
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
