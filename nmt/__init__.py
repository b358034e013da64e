"""nmt: the RNN Encoder–Decoder of Cho et al. (2014) and what it takes to train, run and
evaluate it. The library modules here take plain typed arguments (``nmt.config``);
``nmt.commands`` holds the console scripts, the only part that knows Hydra."""
