"""`python -m calendar_sync.testing [--port N]`: serve the fake Google until interrupted.

The first line printed is JSON of the environment variables that point the host project at it.
"""
import argparse
import json
import time

from .fake_google import FakeGoogle

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--port", type=int, default=8765)
parser.add_argument("--client-id", default="sandbox-client-id")
parser.add_argument("--client-secret", default="sandbox-client-secret")
args = parser.parse_args()

with FakeGoogle(port=args.port, client_id=args.client_id, client_secret=args.client_secret) as google:
    print(json.dumps(google.env()), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
