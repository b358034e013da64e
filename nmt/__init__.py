"""nmt: the RNN Encoder–Decoder of Cho et al. (2014) and what it takes to train, run and
evaluate it. The library modules here take plain typed arguments (``nmt.config``);
``nmt.commands`` holds the console scripts, the only part that knows Hydra."""

__all__ = ["load", "Model", "Translation"]


def __getattr__(name: str):
    """``nmt.load`` and its classes (``nmt.api``), imported on first use: ``import nmt`` stays cheap."""
    if name in __all__:
        from nmt import api

        return getattr(api, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
