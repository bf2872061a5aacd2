"""A client that sends what Dinie's Python SDK (dinie-sdk) sends.

dinie-sdk is on no registry CI can reach, so this mirrors, on the same
httpx, what its runtime puts on the wire (dinie-tech/sdk-python):

* dinie/runtime/token_manager.py, TokenManager._fetch_token: POST
  {base}/auth/token with a JSON body {grant_type, client_id, client_secret};
* dinie/runtime/http.py, BaseClient.request and _build_headers: every try
  with Authorization: Bearer, Content-Type and Accept application/json, its
  User-Agent "Dinie-SDK-Python/<version> (api-version=...; python/...)", an
  Idempotency-Key minted once for POST, PATCH, PUT and DELETE, and
  X-Dinie-Retry-Count from the second try on; up to 2 retries after 408,
  429, 500, 502, 503 or 504, waiting Retry-After (0 waits nothing); one
  re-authentication after a 401;
* biometrics.session_exchange (dinie/generated/resources/biometrics.py):
  POST /biometrics/session-exchange through that same loop; its token is
  the bearer of the session's later requests.

Usage: client.py BASE_URL post PATH | session CODE PATH
Prints one JSON line: the last status, the tries made, and the body.
"""

import json
import sys
import time
import uuid

import httpx

USER_AGENT = "Dinie-SDK-Python/0.5.0 (api-version=2026-03-01; python/%d.%d.%d)" % sys.version_info[:3]
RETRYABLE = {408, 429, 500, 502, 503, 504}
MAX_RETRIES = 2


class Client:
    def __init__(self, base_url, http):
        self.base = base_url.rstrip("/")
        self.http = http
        self.token = None
        self.tries = 0

    def fetch_token(self):
        r = self.http.post(self.base + "/auth/token", json={
            "grant_type": "client_credentials", "client_id": "fake-sdk-id", "client_secret": "fake-sdk-secret"})
        if r.status_code >= 400:
            raise SystemExit("token request: %d %s" % (r.status_code, r.text))
        self.token = r.json()["access_token"]

    def request(self, method, path, body=None):
        key = str(uuid.uuid4()) if method in ("POST", "PATCH", "PUT", "DELETE") else None
        reauthed = False
        attempt = 0
        while attempt <= MAX_RETRIES:
            if self.token is None:
                self.fetch_token()
            headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json",
                       "Accept": "application/json", "User-Agent": USER_AGENT}
            if key is not None:
                headers["Idempotency-Key"] = key
            if attempt > 0:
                headers["X-Dinie-Retry-Count"] = str(attempt)
            self.tries += 1
            r = self.http.request(method, self.base + path, headers=headers, json=body)
            if 200 <= r.status_code < 300:
                return r
            if r.status_code == 401 and not reauthed:
                reauthed = True
                self.token = None
                continue
            if r.status_code in RETRYABLE and attempt < MAX_RETRIES:
                wait = r.headers.get("retry-after")
                time.sleep(min(float(wait), 60) if wait is not None else 0.5 * 2 ** attempt)
                attempt += 1
                continue
            return r
        return r


def main():
    base, command = sys.argv[1], sys.argv[2]
    with httpx.Client(timeout=30) as http:
        c = Client(base, http)
        if command == "post":
            r = c.request("POST", sys.argv[3], {"amount": 100})
        elif command == "session":
            r = c.request("POST", "/biometrics/session-exchange", {"code": sys.argv[3]})
            if r.status_code != 200:
                raise SystemExit("session exchange: %d %s" % (r.status_code, r.text))
            c.token = r.json()["access_token"]
            r = c.request("GET", sys.argv[4])
        else:
            raise SystemExit("unknown command " + command)
        print(json.dumps({"status": r.status_code, "tries": c.tries, "body": r.text}))


main()
