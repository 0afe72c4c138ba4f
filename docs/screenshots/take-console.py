#!/usr/bin/env python3
"""The README's pictures of the guard's console on the demo: logs in over WebDriver (Debian's
chromium and chromium-driver) and saves the page at a viewport of W x H.

usage: cargo run -p gatehouse-demo   (in another terminal; note the guard's printed password)
       python3 docs/screenshots/take-console.py http://127.0.0.1:8081 guard PASSWORD OUT.png 1280 800 [SECONDS]
"""
import base64
import json
import subprocess
import sys
import time
import urllib.request

PORT = 9515
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# Headless Chromium's window is this much taller than the page it shows.
WINDOW_EXTRA = 143


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method, data=data,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())["value"]


def main():
    base, user, password, out = sys.argv[1:5]
    w, h = int(sys.argv[5]), int(sys.argv[6])
    wait = float(sys.argv[7]) if len(sys.argv) > 7 else 6
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--lang=zh-CN",
            "--hide-scrollbars", f"--window-size={w},{h + WINDOW_EXTRA}"]
    caps = {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}
    sid = call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def element(css):
        found = call("POST", f"/session/{sid}/element", {"using": "css selector", "value": css})
        return found[ELEMENT]

    call("POST", f"/session/{sid}/url", {"url": base + "/login"})
    call("POST", f"/session/{sid}/element/{element('input[name=user]')}/value", {"text": user})
    call("POST", f"/session/{sid}/element/{element('input[name=password]')}/value",
         {"text": password})
    call("POST", f"/session/{sid}/element/{element('button[type=submit]')}/click", {})
    time.sleep(wait)
    with open(out, "wb") as f:
        f.write(base64.b64decode(call("GET", f"/session/{sid}/screenshot")))
    call("DELETE", f"/session/{sid}")


driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={PORT}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    time.sleep(1)
    main()
finally:
    driver.kill()
