"""
The C{--store} URL of an S3 bucket: what it names, and one clear line for
each way it can be wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from boxsync.server.index import SQLiteIndex
from boxsync.server.s3store import BadStore, S3Location, parse_store_url, stores_from_url


@pytest.mark.parametrize(
    "url, location",
    [
        (
            "s3://boxsync-blocks?endpoint=http://s3:8333&region=us-east-1",
            S3Location("boxsync-blocks", "http://s3:8333", "us-east-1"),
        ),
        ("s3://blocks.example/?region=eu-west-3", S3Location("blocks.example", None, "eu-west-3")),
        ("s3://abc?endpoint=https://127.0.0.1", S3Location("abc", "https://127.0.0.1", "us-east-1")),
    ],
)
def test_a_store_url_names_a_bucket_its_service_and_region(url: str, location: S3Location) -> None:
    assert parse_store_url(url) == location


@pytest.mark.parametrize(
    "url, error",
    [
        ("http://bucket", r"^a store URL starts with s3://, as in s3://BUCKET\?endpoint=http://HOST:PORT$"),
        ("/var/boxsync", r"^a store URL starts with s3://"),
        ("s3://key:secret@bucket", r"^credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not in"),
        ("s3://", r"^'' is not a bucket name: 3 to 63 lowercase letters, digits, '\.' and '-'$"),
        ("s3://Blocks", r"^'Blocks' is not a bucket name"),
        ("s3://ab", r"^'ab' is not a bucket name"),
        ("s3://bucket/folder", r"^a store URL names a bucket only: s3://BUCKET, without a path$"),
        ("s3://bucket#part", r"^a store URL names a bucket only"),
        ("s3://bucket?endpoint", r"^the store URL's parameters 'endpoint' are not name=value pairs$"),
        ("s3://bucket?secret=x", r"^unknown store URL parameter 'secret': only endpoint and region$"),
        ("s3://bucket?region=a&region=b", r"^the store URL gives 'region' more than once$"),
        ("s3://bucket?endpoint=s3:8333", r"^endpoint 's3:8333' is not an http:// or https:// address of an S3"),
        ("s3://bucket?endpoint=http://", r"^endpoint 'http://' is not an http:// or https:// address"),
        ("s3://bucket?endpoint=http://s3/x", r"^endpoint 'http://s3/x' is not an http:// or https:// address"),
        ("s3://bucket?endpoint=http://s3:port", r"^endpoint 'http://s3:port' has no valid port$"),
        ("s3://bucket?region=US_EAST", r"^'US_EAST' is not a region name$"),
    ],
)
def test_a_bad_store_url_is_refused_in_one_line(url: str, error: str) -> None:
    with pytest.raises(BadStore, match=error) as refused:
        parse_store_url(url)
    assert "\n" not in str(refused.value)


def test_credentials_come_both_or_neither(tmp_path: Path) -> None:
    clock = Clock()
    index = SQLiteIndex(clock, tmp_path / "index.sqlite")
    url = "s3://blocks?endpoint=http://127.0.0.1:9"
    with pytest.raises(BadStore, match=r"^give both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither$"):
        stores_from_url(url, clock, index, {"AWS_ACCESS_KEY_ID": "key"})
    with pytest.raises(BadStore, match=r"^give both"):
        stores_from_url(url, clock, index, {"AWS_SECRET_ACCESS_KEY": "secret"})
    stores = stores_from_url(url, clock, index, {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"})
    one, other = stores("alice"), stores("bob")
    assert (one.account, other.account) == ("alice", "bob")
    assert one.bucket is other.bucket and one.bucket.name == "blocks"
    assert one.key("ab" + "0" * 62) == f"blocks/alice/ab/ab{'0' * 62}"
    assert one.bucket.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert one.bucket.client.meta.region_name == "us-east-1"
