"""flows.reproduce's pure parts: what DVC said was missing, which names it accepts, and what it
tells the user to configure."""

import pytest

from flows.reproduce import (Refused, access_fix, location_fix, missing_dependencies,
                              missing_targets, not_there, reproduce)

DVC_PULL_FAILED = """No remote provided and no default remote set.
ERROR: failed to pull data from the cloud - Checkout failed for following targets:
data/raw
models/candidate
Is your cache up to date?
<https://error.dvc.org/missing-files>
"""

# `dvc pull` (dvc-s3 3.3, moto's S3 server) from a bucket that does not exist, and without keys.
DVC_PULL_NO_BUCKET = """ERROR: unexpected error - The specified bucket does not exist: An error \
occurred (NoSuchBucket) when calling the ListObjectsV2 operation: The specified bucket does \
not exist
"""
DVC_PULL_NO_KEYS = """ERROR: failed to connect to s3 (my-bucket/alexnet/files/md5) - Unable to \
locate credentials
ERROR: failed to pull data from the cloud - 1 files failed to download
"""
# `dvc pull` from an S3 remote without dvc-s3 installed (dvc/cli/__init__.py's message, PKG=None:
# DVC installed from source), and `dvc pull` with some files in neither the cache nor the remote.
DVC_PULL_NO_DVC_S3 = """ERROR: URL 's3://my-bucket/alexnet' is supported but requires these \
missing dependencies: ['s3'].
Please report this bug to <https://github.com/treeverse/dvc/issues>. Thank you!
"""
DVC_PULL_SOME_MISSING = """WARNING: Some of the cache files do not exist neither locally nor on \
remote. Missing cache files:
name: None, md5: 0123456789abcdef0123456789abcdef.dir
ERROR: failed to pull data from the cloud - 1 files failed to download
"""


def test_missing_targets_are_read_from_dvc_output():
    assert missing_targets(DVC_PULL_FAILED) == ["data/raw", "models/candidate"]
    assert missing_targets("Everything is up to date.") == []


@pytest.mark.parametrize("name", ["-x", "--help", "a b", "../x", "", "x;rm"])
def test_a_name_that_is_not_an_experiment_name_is_refused_before_any_command(tmp_path, name):
    with pytest.raises(Refused, match="is not a run name"):
        reproduce(tmp_path, name)


def test_an_s3_remote_that_cannot_be_read_is_given_its_keys_and_endpoint():
    fix = "\n".join(access_fix("store", "s3://my-bucket/alexnet"))
    assert "dvc remote modify --local store access_key_id" in fix
    assert "dvc remote modify --local store secret_access_key" in fix
    assert "dvc remote modify store endpointurl" in fix
    assert "access_key_id" not in "\n".join(access_fix("box", "ssh://host/srv/dvc"))


def test_data_missing_on_a_remote_points_at_the_remote_and_a_local_cache_if_there_is_one():
    assert location_fix("store", None) == [location_fix("store", "/w/.dvc/cache")[0]]
    assert "dvc remote modify --local store url" in location_fix("store", None)[0]
    assert "dvc remote add --local -d recorded /w/.dvc/cache" in location_fix("store",
                                                                            "/w/.dvc/cache")[1]


def test_data_not_on_the_remote_is_told_apart_from_a_remote_that_could_not_be_read():
    assert not_there(DVC_PULL_FAILED) and not_there(DVC_PULL_NO_BUCKET)
    assert not not_there(DVC_PULL_NO_KEYS)


def test_a_missing_dvc_extra_is_not_data_missing_on_the_remote():
    assert missing_dependencies(DVC_PULL_NO_DVC_S3) == "['s3']"
    assert not not_there(DVC_PULL_NO_DVC_S3)
    assert missing_dependencies(DVC_PULL_FAILED) is None
    assert not_there(DVC_PULL_SOME_MISSING)
    assert not not_there("ERROR: unexpected error - missing credentials for the remote")
