"""AlexNet training pipeline: the library.

Pure functions for each stage (ingest, validate, split, preprocess, train, evaluate) and one thin
CLI (`alexnet --help`). It imports neither Prefect nor DVC: those orchestrate it from tasks/ and
flows/, so every stage can also be run and tested on its own.
"""

__version__ = "0.1.0"
