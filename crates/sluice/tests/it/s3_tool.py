#!/usr/bin/env python3
"""S3 side of sluice's archive tests, through boto3 (an independent client).

    s3_tool.py ENDPOINT mkbucket BUCKET
    s3_tool.py ENDPOINT read BUCKET PREFIX OUT

`read` lists every object under PREFIX except `_sluice/`, downloads it, inflates
gzip (by magic bytes; zstd is not read here) and writes one line per record to
OUT: key <TAB> object size <TAB> partition <TAB> offset <TAB> message.
"""

import gzip
import json
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def main():
    endpoint, cmd = sys.argv[1], sys.argv[2]
    s3 = client(endpoint)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=sys.argv[3])
        return
    bucket, prefix, out = sys.argv[3], sys.argv[4].rstrip("/") + "/", sys.argv[5]
    with open(out, "w") as f:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix):]
                if key.startswith("_sluice/"):
                    continue
                data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                for line in data.splitlines():
                    v = json.loads(line)
                    f.write(f"{key}\t{obj['Size']}\t{v['kafka.partition']}\t{v['kafka.offset']}\t{v['message']}\n")


if __name__ == "__main__":
    main()
