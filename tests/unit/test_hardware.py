"""`train.workers: auto` and `train.mixed_precision: auto` resolve from what the host has."""

import pytest

from alexnet.hardware import (cpu_flags, cuda_build, precision_policy, resolve_precision,
                              resolve_workers, visible_gpu_count)
from alexnet.params import ParamsError

CPUINFO = """processor\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma
"""


def test_cpu_flags_are_read_from_cpuinfo_text():
    assert {"avx2", "avx512_bf16"} <= cpu_flags(CPUINFO)
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize("setting, flags, gpus, expected", [
    ("auto", {"avx2", "avx512_bf16"}, [], "bfloat16"),    # native bf16 dot products
    ("auto", {"avx2", "amx_bf16", "amx_tile"}, [], "bfloat16"),  # AMX
    ("auto", {"avx2", "avx512f"}, [], "float32"),         # bf16 only emulated: slower
    ("auto", set(), [], "float32"),
    ("auto", {"avx512_bf16"}, [(8, 0), (8, 0)], "float16"),  # tensor cores on every GPU
    ("auto", {"avx512_bf16"}, [(7, 0)], "float16"),
    ("auto", {"avx512_bf16"}, [(6, 1)], "float32"),        # no tensor cores: GPU decides
    ("auto", set(), [(8, 0), (6, 1)], "float32"),          # one GPU without them
    (False, {"avx512_bf16"}, [(8, 0)], "float32"),
    (True, set(), [], "bfloat16"),                         # `true` keeps its meaning
    (True, set(), [(6, 1)], "float16"),
    ("bfloat16", set(), [(8, 0)], "bfloat16"),             # an explicit name wins
    ("float32", {"avx512_bf16"}, [], "float32"),
    ("float16", set(), [], "float16"),
])
def test_precision_resolution(setting, flags, gpus, expected):
    assert resolve_precision(setting, frozenset(flags), gpus) == expected


def test_precision_policies_are_keras_names():
    assert [precision_policy(x) for x in ("float32", "bfloat16", "float16")] == \
        ["float32", "mixed_bfloat16", "mixed_float16"]


@pytest.mark.parametrize("workers, gpus, hosts, expected", [
    ("auto", 0, "localhost", 1),             # CPU-only host: one worker using every core
    ("auto", 4, "localhost", 4),             # one worker per GPU
    ("auto", 0, "gpu1:4,gpu2:2", 6),         # several hosts: one worker per slot
    (2, 0, "localhost", 2),                  # an explicit number wins
    (3, 8, "localhost", 3),
])
def test_worker_resolution(workers, gpus, hosts, expected):
    assert resolve_workers(workers, gpus, hosts) == expected


@pytest.mark.parametrize("environ, devices, expected", [
    ({}, ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"], 2),
    ({}, ["null", "tty"], 0),
    ({"CUDA_VISIBLE_DEVICES": "1"}, ["nvidia0", "nvidia1"], 1),
    ({"CUDA_VISIBLE_DEVICES": ""}, ["nvidia0"], 0),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, ["nvidia0"], 0),
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, ["nvidia0", "nvidia1", "nvidia2"], 3),
    # CUDA stops at the first id that is no GPU of the host: "2,3" on 2 GPUs is none at all.
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, ["nvidia0", "nvidia1"], 0),
    ({"CUDA_VISIBLE_DEVICES": "1,2,0"}, ["nvidia0", "nvidia1"], 1),
    ({"CUDA_VISIBLE_DEVICES": "0,-1,1"}, ["nvidia0", "nvidia1"], 1),
    ({"CUDA_VISIBLE_DEVICES": "0,x"}, ["nvidia0", "nvidia1"], 1),
    ({"CUDA_VISIBLE_DEVICES": "0,0"}, ["nvidia0", "nvidia1"], 1),   # a GPU listed twice
    ({"CUDA_VISIBLE_DEVICES": "0,\u00b2"}, ["nvidia0", "nvidia1"], 1),  # a digit int() refuses
    ({"CUDA_VISIBLE_DEVICES": " 0, 1 "}, ["nvidia0", "nvidia1"], 2),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, [], 0),
    # UUIDs (nvidia-smi -L) cannot be checked without the driver: each is one GPU, at most all.
    ({"CUDA_VISIBLE_DEVICES": "GPU-8932f937-d72c,MIG-1b2c"}, ["nvidia0", "nvidia1"], 2),
    ({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,GPU-c"}, ["nvidia0", "nvidia1"], 2),
    ({"CUDA_VISIBLE_DEVICES": "GPU-a"}, [], 0),
])
def test_visible_gpus_follow_cuda_visible_devices(environ, devices, expected):
    assert visible_gpu_count(environ, devices) == expected


# TF 2.15's generated tensorflow/python/platform/build_info.py: tensorflow-cpu's, and the
# CUDA build's (pip install tensorflow[and-cuda]).
CPU_BUILD = ("build_info = collections.OrderedDict([('is_cuda_build', False), "
             "('is_rocm_build', False), ('is_tensorrt_build', False)])\n")
CUDA_BUILD = ("build_info = collections.OrderedDict([('cpu_compiler', '/usr/bin/clang-17'), "
              "('cuda_compute_capabilities', ['sm_50', 'sm_60', 'compute_90']), "
              "('cuda_version', '12.2'), ('cudnn_version', '8'), ('is_cuda_build', True), "
              "('is_rocm_build', False), ('is_tensorrt_build', True)])\n")


@pytest.mark.parametrize("text, expected", [
    (CPU_BUILD, False), (CUDA_BUILD, True),
    (None, None),                          # no readable build info: cannot tell
    ("build_info = {}\n", None),
])
def test_cuda_build_is_read_from_tensorflows_build_info(text, expected):
    assert cuda_build(text) is expected


@pytest.mark.parametrize("cuda, expected", [(False, 0), (True, 2), (None, 2)])
def test_gpus_count_only_when_tensorflow_can_use_them(cuda, expected):
    # tensorflow-cpu (make's default) on a GPU host: one worker using every core, not 2 CPU ones.
    assert visible_gpu_count({}, ["nvidia0", "nvidia1"], cuda=cuda) == expected


def test_installed_tensorflow_build_is_found_without_importing_it():
    import subprocess
    import sys

    code = ("import sys; from alexnet.hardware import installed_cuda_build as f; "
            "r = f(); assert 'tensorflow' not in sys.modules; print(r)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import tensorflow as tf
    assert out.stdout.strip() == str(tf.sysconfig.get_build_info()["is_cuda_build"])


def test_auto_workers_must_still_split_the_global_batch():
    with pytest.raises(ParamsError, match="multiple of train.workers"):
        resolve_workers("auto", 3, "localhost", batch_size=128)
