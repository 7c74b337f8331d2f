"""The dashboard's health probe, what its image's HEALTHCHECK and compose run: ``python -m web_svc.probe``.

GET /healthz on this host, on the port WEB_PORT names (default 5080), over HTTPS when
WEB_TLS_CERT_FILE is set; exit 0 only on 200 OK, 1 otherwise, with why on stderr. The
certificate is not verified: the probe asks its own container, by loopback address,
whether it serves, not whether a browser would trust it.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 5080
TIMEOUT_SECONDS = 3.0


def main() -> int:
    """Probe once; the exit code."""
    port = os.environ.get("WEB_PORT", "").strip() or str(DEFAULT_PORT)
    https = bool(os.environ.get("WEB_TLS_CERT_FILE"))
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}/healthz"
    context = ssl._create_unverified_context() if https else None  # noqa: S323 - loopback liveness only
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as reply:  # noqa: S310 - our URL
            if reply.status == 200:
                return 0
            print(f"{url} answered {reply.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
