#!/usr/bin/env python3
"""Holds N live streams open on the guard's console, as N browser tabs would: logs in as the
bench's guard, opens N `GET /live` event streams and reads them as fast as they come, logging in
again whenever the daemon restarts (a new engine run). Prints what it read when stopped.

usage: bench/console_streams.py HOST:PORT USER PASSWORD N
"""
import http.client
import re
import signal
import sys
import threading
import time
import urllib.parse

addr, user, password, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = addr.rsplit(":", 1)
totals = {"bytes": 0, "streams": 0, "logins": 0}
lock = threading.Lock()


def login():
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("GET", "/login")
    r = c.getresponse()
    page = r.read().decode()
    cookie = r.getheader("Set-Cookie", "").split(";")[0]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf": csrf, "user": user, "password": password})
    c.request("POST", "/login", body, {"Cookie": cookie,
                                       "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    session = [h.split(";")[0] for k, h in r.getheaders()
               if k.lower() == "set-cookie" and h.startswith("gh_console=")]
    if not session:
        raise RuntimeError("login refused")
    with lock:
        totals["logins"] += 1
    return session[0]


def stream(cookie, done):
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("GET", "/live", headers={"Cookie": cookie})
        r = c.getresponse()
        if r.status != 200:
            return
        with lock:
            totals["streams"] += 1
        while True:
            chunk = r.read1(65536)
            if not chunk:
                return
            with lock:
                totals["bytes"] += len(chunk)
    except Exception:
        return
    finally:
        done.release()


def stop(*_):
    print(f"console streams: {totals['streams']} opened, {totals['logins']} logins, "
          f"{totals['bytes']} bytes read", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while True:
    try:
        cookie = login()
    except Exception:
        time.sleep(0.2)
        continue
    done = threading.Semaphore(0)
    for _ in range(n):
        threading.Thread(target=stream, args=(cookie, done), daemon=True).start()
    # All gone (the engine stopped): log in again to the next one.
    for _ in range(n):
        done.acquire()
