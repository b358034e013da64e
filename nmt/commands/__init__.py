"""The command layer: one module per console script (nmt-train, nmt-translate,
nmt-evaluate, nmt-score). Each composes its Hydra config, checks the command line,
turns the config into the library's plain dataclasses and arguments, and prints
errors as one line. The only part of nmt that imports ``hydra`` or ``omegaconf``.
"""
