"""`train.hosts` goes to horovodrun's -H (and from there to ssh): its syntax is checked with the
other params, so a bad value is a params error (78) and never "a worker died, rerun" (75)."""

import pytest

from alexnet.cli import main
from alexnet.errors import EXIT_CONFIG
from alexnet.params import ParamsError, parse_params


@pytest.mark.parametrize("hosts, workers", [
    ("localhost", 2), ("localhost:2", 2), ("gpu1:4,gpu2:4", 8), ("gpu-1.example.com:2", 1),
    ("10.0.0.5:1,10.0.0.6:1", 2),
])
def test_good_hosts(hosts, workers):
    assert parse_params({"train": {"hosts": hosts, "workers": workers}}).train.hosts == hosts


@pytest.mark.parametrize("hosts, workers, why", [
    ("gpu1", 1, "host:slots"),                      # no slots
    ("gpu1:0", 1, "positive"),
    ("gpu1:-2", 1, "host:slots"),
    ("gpu1:two", 1, "host:slots"),
    ("gpu1:4,,gpu2:4", 8, "host:slots"),
    ("gpu1:4, gpu2:4", 8, "host:slots"),            # a space
    ("-oProxyCommand=touch PWNED:1", 1, "host:slots"),  # an ssh option, not a host
    ("gpu1:1;touch PWNED", 1, "host:slots"),
    ("$(touch PWNED):1", 1, "host:slots"),
    ("gpu1:1,gpu2:1", 4, "slots"),                  # 2 slots for 4 workers
    ("", 1, "host:slots"),
])
def test_bad_hosts_are_a_params_error(hosts, workers, why):
    with pytest.raises(ParamsError, match="train.hosts") as err:
        parse_params({"train": {"hosts": hosts, "workers": workers}})
    assert why in str(err.value)


def test_alexnet_train_with_bad_hosts_exits_78_before_launching(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train: {hosts: 'gpu1;reboot', workers: 1}\n")
    assert main(["train", "--cache", "cache"]) == EXIT_CONFIG
    assert not (tmp_path / "models").exists()
