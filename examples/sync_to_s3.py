"""Back a filesystem store up to S3 with kvstore.sync, and restore it from there.

Runs against the S3 endpoint named by ``AWS_ENDPOINT_URL_S3`` (a moto server, MinIO, ...)
with the usual AWS credentials from the environment::

    AWS_ENDPOINT_URL_S3=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
        python examples/sync_to_s3.py [WORK_DIR]

Without ``AWS_ENDPOINT_URL_S3`` it says so and exits (status 0): it never touches real AWS
by accident. The same from the command line::

    kvstore sync file:WORK_DIR/local 's3://bucket/backup?endpoint_url=...' --state sync.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from urllib.parse import quote

import kvstore


def main(argv: list) -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3")
    if not endpoint:
        print("AWS_ENDPOINT_URL_S3 is not set: point it at an S3 endpoint to run this example.")
        return 0
    work = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="kvstore-sync-")
    bucket = os.environ.get("KVSTORE_EXAMPLE_BUCKET", "kvstore-example")
    url = f"s3://{bucket}/backup-{uuid.uuid4().hex[:8]}?endpoint_url={quote(endpoint, safe='')}&create=true"

    with kvstore.FileSystemStore(os.path.join(work, "local"), create=True) as local, \
            kvstore.open_store(url) as s3:
        local.set("reports/2024.csv", (b"month,total\njan,12\n", {"type": "report", "year": 2024}))
        local.set("reports/2025.csv", (b"month,total\njan,15\n", {"type": "report", "year": 2025}))
        local.set("notes/readme.txt", (b"hello", {"type": "note"}))

        # Every key whose size, checksum or metadata differ is copied, then verified;
        # the state file lets an interrupted run resume where it stopped.
        state = os.path.join(work, "sync-state.json")
        report = kvstore.sync(local, s3, state=state)
        print("to S3:", report.summary())
        report = kvstore.sync(local, s3, state=state)
        print("again:", report.summary())  # nothing changed: everything skipped

        local.update_metadata("notes/readme.txt", {"reviewed": True})
        local.delete("reports/2024.csv")
        report = kvstore.sync(local, s3, delete=True)
        print("after a change:", report.summary(), "done:", report.done, "deleted:", report.deleted)

        # ... and back, into a fresh store.
        with kvstore.FileSystemStore(os.path.join(work, "restored"), create=True) as restored:
            report = kvstore.sync(s3, restored)
            print("restore:", report.summary())
            same = all(restored.to_bytes(k) == local.to_bytes(k) and
                       restored.get_metadata(k) == local.get_metadata(k) for k in local.glob("*"))
            print("restored:", same and sorted(restored.glob("*")) == sorted(local.glob("*")))

        for key in list(s3.glob("*")):
            s3.delete(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
