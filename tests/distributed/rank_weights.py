"""Run under horovodrun: train with alexnet.distributed, then save THIS rank's final weights.

    horovodrun -np 2 -H localhost:2 --gloo python tests/distributed/rank_weights.py PARAMS CACHE OUT
"""

import sys
from pathlib import Path

import horovod.tensorflow.keras as hvd
import numpy as np

from alexnet.distributed import train
from alexnet.params import load_params

params, cache, out = map(Path, sys.argv[1:4])
model = train(load_params(params).train, cache, out / "model", out / "checkpoints", out / "live")
np.savez(out / f"rank-{hvd.rank()}.npz", *model.get_weights())
