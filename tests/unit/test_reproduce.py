"""flows.reproduce's pure parts: what DVC said was missing, and which names it accepts."""

import pytest

from flows.reproduce import Refused, missing_targets, reproduce

DVC_PULL_FAILED = """No remote provided and no default remote set.
ERROR: failed to pull data from the cloud - Checkout failed for following targets:
data/raw
models/candidate
Is your cache up to date?
<https://error.dvc.org/missing-files>
"""


def test_missing_targets_are_read_from_dvc_output():
    assert missing_targets(DVC_PULL_FAILED) == ["data/raw", "models/candidate"]
    assert missing_targets("Everything is up to date.") == []


@pytest.mark.parametrize("name", ["-x", "--help", "a b", "../x", "", "x;rm"])
def test_a_name_that_is_not_an_experiment_name_is_refused_before_any_command(tmp_path, name):
    with pytest.raises(Refused, match="is not a run name"):
        reproduce(tmp_path, name)
