"""Post one seed item to a running service and wait for its job: the quick start, timed.

    python bench/post_seed_item.py                 # item 0, key from ./data/api_key, localhost:8000
    python bench/post_seed_item.py --index 5 --url http://127.0.0.1:8000 --key KEY

Prints the 202 answer, the seconds from POST to a final job state, the job and the record, and
exits 1 unless the job succeeded with a record that validates against `enhancer schema`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import jsonschema

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.contract import news_metadata_json_schema  # noqa: E402
from training.seed_data import SeedDataMissing, load_seed_requests, seed_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="API key (default: the contents of ./data/api_key)")
    parser.add_argument("--index", type=int, default=0, help="line of annotated_train.jsonl (default 0)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    args = parser.parse_args(argv)
    key_file = Path("data/api_key")
    if not args.key and not key_file.is_file():
        parser.error("no --key and no ./data/api_key: run from the checkout the service started in")
    key = args.key or key_file.read_text().strip()
    try:
        body = load_seed_requests(seed_file())[args.index]
    except SeedDataMissing as error:
        parser.error(str(error))
    body["message_id"] = f"<post-seed-{uuid.uuid4().hex}@bench>"  # a new job, not the stored one
    with httpx.Client(base_url=args.url, headers={"X-API-Key": key}, timeout=30) as client:
        started = time.monotonic()
        accepted = client.post("/v1/enhance", json=body)
        print(accepted.status_code, accepted.text, accepted.headers.get("location"))
        accepted.raise_for_status()
        job_url = f"/v1/jobs/{accepted.json()['jobs'][0]['id']}"
        while (job := client.get(job_url).json())["status"] not in ("succeeded", "failed"):
            if time.monotonic() - started > args.timeout:
                print(f"job still {job['status']} after {args.timeout:.0f} s")
                return 1
            time.sleep(0.5)
        print(f"{time.monotonic() - started:.1f} s to {job['status']}: {json.dumps(job)}")
        if job["status"] != "succeeded":
            return 1
        record = client.get(job["record_url"]).json()
    print(json.dumps(record, indent=1, ensure_ascii=False))
    jsonschema.validate(record["metadata"], news_metadata_json_schema())
    print("record validates against the NewsMetadata schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
