"""The command layer: one module per console script (nmt-train, nmt-translate,
nmt-evaluate, nmt-score). Each composes its Hydra config, checks the command line,
turns the config into the library's plain dataclasses and arguments, and prints
errors as one line. The only part of nmt that imports ``hydra`` or ``omegaconf``.
"""

import sys

import nmt

if getattr(nmt, "__file__", None) is None:  # a namespace package: a folder named nmt/ without __init__.py
    # `python -m nmt.commands.X` (or torchrun -m) run in the folder that holds a checkout named nmt/:
    # Python imports that checkout folder as the package, and its data/ folder as nmt.data.
    sys.exit(
        f"error: the folder {list(nmt.__path__)[0]} (a checkout of nmt?) hides the installed nmt package from "
        "'python -m': run from another folder, or use the command itself "
        "(nmt-train ..., torchrun --standalone --nproc_per_node=N --no-python nmt-train ...)"
    )
