"""kvstore on S3: write, read, query and hear about changes through an S3Store.

Runs against the S3 endpoint named by ``AWS_ENDPOINT_URL_S3`` (a moto server, MinIO, ...)
with the usual AWS credentials from the environment::

    AWS_ENDPOINT_URL_S3=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
        python examples/s3_store.py

Without ``AWS_ENDPOINT_URL_S3`` it says so and exits (status 0): it never touches real AWS
by accident.
"""

from __future__ import annotations

import io
import os
import uuid
from urllib.parse import quote

import kvstore


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3")
    if not endpoint:
        print("AWS_ENDPOINT_URL_S3 is not set: point it at an S3 endpoint to run this example.")
        return 0
    bucket = os.environ.get("KVSTORE_EXAMPLE_BUCKET", "kvstore-example")
    prefix = f"example-{uuid.uuid4().hex[:8]}"
    # Query parameters become S3Store options; create=true makes the bucket if needed.
    url = f"s3://{bucket}/{prefix}?endpoint_url={quote(endpoint, safe='')}&create=true"

    with kvstore.open_store(url) as store:
        heard = []
        with store.subscribe(lambda event: heard.append((event.action, event.key))):
            store.set("reports/2024.csv", (io.BytesIO(b"month,total\njan,12\n"),
                                           {"type": "report", "year": 2024}))
            store.set("reports/2025.csv", (b"month,total\njan,15\n", {"type": "report", "year": 2025}))
            store.set("notes/readme.txt", (b"hello", {"type": "note"}))
            store.update_metadata("reports/2025.csv", {"checked": True})

        value = store.get("reports/2025.csv")
        with value.data as f:
            print(f"reports/2025.csv: {value.size} bytes, metadata {value.metadata}")
            print(f.read().decode())
        print("reports:", sorted(store.query_keys(type="report")))
        print("glob reports/*:", sorted(store.glob("reports/*")))
        print("events:", heard)

        for key in list(store.glob("*")):
            store.delete(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
