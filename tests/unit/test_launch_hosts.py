"""What `alexnet train` hands horovodrun when a host is remote (Horovod's own rule: its address is
not one of this machine's): no secrets in the environment Horovod writes into each rank's ssh
command line, and no working directory Horovod's unquoted `cd {pwd}` would misread."""

import pytest

from alexnet.errors import EXIT_CONFIG, ConfigError
from alexnet.params import TrainParams
from alexnet.train import launch, remote_hosts, worker_env

ENV = {"PATH": "/usr/bin", "HOME": "/root", "PYTHONPATH": "/w", "OMP_NUM_THREADS": "2",
       "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t",
       "GITHUB_TOKEN": "g", "PREFECT_API_KEY": "p", "DB_PASSWORD": "d", "my_secret": "m",
       "HF_TOKEN": "h", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"}
KEPT = {"PATH", "HOME", "PYTHONPATH", "OMP_NUM_THREADS"}


def test_a_remote_host_gets_no_secrets_and_a_local_one_everything():
    assert set(worker_env(ENV, remote=True)) == KEPT
    assert worker_env(ENV, remote=False) == ENV


def test_remote_hosts_follow_horovods_rule():
    assert remote_hosts(TrainParams(workers=2, hosts="localhost:1,127.0.0.1:1")) == []
    assert remote_hosts(TrainParams(workers=2, hosts="localhost:1,127.0.0.2:1")) == ["127.0.0.2"]
    assert remote_hosts(TrainParams()) == []


@pytest.mark.parametrize("folder", ["a b", "x;touch y", "$(id)", "q'uote", "été"])
def test_a_working_directory_a_remote_shell_would_misread_is_refused(tmp_path, monkeypatch,
                                                                     folder):
    (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / folder)
    with pytest.raises(ConfigError, match="working directory") as refused:
        launch(TrainParams(workers=2, batch_size=2, hosts="localhost:1,127.0.0.2:1"),
               *[tmp_path / n for n in ("params.yaml", "cache", "model", "ckpt", "live")])
    assert str(tmp_path / folder) in str(refused.value) and "127.0.0.2" in str(refused.value)
    assert refused.value.exit_code == EXIT_CONFIG
