#!/usr/bin/env python3
"""Drives the dashboard of a server with API keys in a real headless Chromium.

Usage: dashboard_keys_check.py BASE_URL TENANT_KEY RUNNING_BATCH WORK_DIR

Checks, failing with a message on the first that does not hold:
1. With the key in session storage, the list shows the running batch and its
   progress advances without a reload: the EventSource opened with a stream
   token, and its URL carries no key.
2. The nodes table says that it needs an admin key (a tenant key gets 403).
3. The batch page's export links carry no key.
Chromium's profile, HOME and temporary files are in WORK_DIR (see
dashboard_check.py, whose browser this uses).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dashboard_check import Browser, fail  # noqa: E402


def main():
    base, key, running, out = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    browser = Browser(out)
    try:
        # The key goes in the origin's session storage first, so the page never prompts.
        browser.open(base + "/healthz")
        browser.wait("location.pathname === '/healthz' && document.readyState === 'complete'", "a page of the origin")
        browser.eval(f"sessionStorage.setItem('tranche-key', {json.dumps(key)}); true")
        browser.open(base + "/#/")
        row = f'document.querySelector(\'tr[data-id="{running}"] .pct\')'
        first = float(browser.wait(f"{row} && parseFloat({row}.textContent)", "the running batch in the list") or 0)
        browser.wait("stream && stream.readyState === EventSource.OPEN", "the event stream to open")
        url = browser.eval("stream.url")
        if "stream_token=" not in url or key in url or "access_token" in url:
            fail(f"the event stream's URL should carry a stream token and no key: {url}")
        later = browser.wait(f"{row} && parseFloat({row}.textContent) > {first} && parseFloat({row}.textContent)",
                             "the progress to advance over the token's stream")
        print(f"list: progress went from {first}% to {later}% over a stream opened with a stream token")
        browser.wait("document.querySelector('#nodes tbody') && "
                     "document.querySelector('#nodes tbody').textContent.includes('admin key')",
                     "the nodes table to say it needs an admin key")
        print("list: the nodes table says it needs an admin key")

        browser.open(f"{base}/#/batch/{running}")
        browser.wait("!!document.querySelector('#export-csv') && "
                     "document.querySelector('#export-csv').href.includes('format=csv')", "the batch page")
        links = browser.eval("[...document.querySelectorAll('a[id^=export-]')].map((a) => a.href).join(' ')")
        if key in links or "access_token" in links:
            fail(f"an export link carries the key: {links}")
        browser.wait("stream && stream.readyState === EventSource.OPEN && stream.url.includes('/batches/')",
                     "the batch's event stream to open")
        print("batch page: export links and the event stream carry no key")
        print("dashboard key checks passed")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
