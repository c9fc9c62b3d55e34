#!/usr/bin/env python3
"""Azure Blob side of sluice's archive tests, through azure-storage-blob (an
independent client), against Azurite's well-known development account.

    az_tool.py BLOB_URL mkcontainer CONTAINER
    az_tool.py BLOB_URL read CONTAINER PREFIX OUT

BLOB_URL is Azurite's blob endpoint (http://127.0.0.1:PORT). `read` lists every
blob under PREFIX except `_sluice/`, downloads it, inflates zstd or gzip (by magic
bytes) and writes one line per record to OUT:
key <TAB> blob size <TAB> partition <TAB> offset <TAB> message.
"""

import gzip
import json
import sys

from azure.storage.blob import BlobServiceClient

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def inflate(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import subprocess

        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def main():
    url, cmd = sys.argv[1], sys.argv[2]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={url}/{ACCOUNT};"
    )
    service = BlobServiceClient.from_connection_string(conn)
    if cmd == "mkcontainer":
        service.create_container(sys.argv[3])
        return
    container, prefix, out = sys.argv[3], sys.argv[4].rstrip("/") + "/", sys.argv[5]
    c = service.get_container_client(container)
    with open(out, "w") as f:
        for blob in c.list_blobs(name_starts_with=prefix):
            key = blob.name[len(prefix):]
            if key.startswith("_sluice/"):
                continue
            data = inflate(c.download_blob(blob.name).readall())
            for line in data.splitlines():
                v = json.loads(line)
                f.write(f"{key}\t{blob.size}\t{v['kafka.partition']}\t{v['kafka.offset']}\t{v['message']}\n")


if __name__ == "__main__":
    main()
