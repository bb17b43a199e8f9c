"""`python -m calendar_sync.testing [--port N] [--microsoft-port M]`: serve the fake Google and the
fake Microsoft until interrupted.

The first line printed is one JSON object of the environment variables that point the host
project at both. Each fake's root URL is a page of its accounts, calendars and events.
"""

import argparse
import json
import time

from .fake_google import FakeGoogle
from .fake_microsoft import FakeMicrosoft

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--port", type=int, default=8765, help="the fake Google's port")
parser.add_argument("--client-id", default="sandbox-client-id", help="the fake Google's client id")
parser.add_argument("--client-secret", default="sandbox-client-secret", help="the fake Google's client secret")
parser.add_argument("--microsoft-port", type=int, default=8766, help="the fake Microsoft's port")
parser.add_argument("--microsoft-client-id", default="sandbox-ms-client-id", help="the fake Microsoft's client id")
parser.add_argument(
    "--microsoft-client-secret", default="sandbox-ms-client-secret", help="the fake Microsoft's client secret"
)
args = parser.parse_args()

with (
    FakeGoogle(port=args.port, client_id=args.client_id, client_secret=args.client_secret) as google,
    FakeMicrosoft(
        port=args.microsoft_port, client_id=args.microsoft_client_id, client_secret=args.microsoft_client_secret
    ) as microsoft,
):
    print(json.dumps({**google.env(), **microsoft.env()}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
