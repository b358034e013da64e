"""``nmt-export``: a checkpoint as a release folder (``nmt.release``) that every command takes as ``ckpt=``.

    nmt-export ckpt=outputs/RUN output=models/es-en                  # best.pt, float16 weights
    nmt-export ckpt=outputs/RUN/averaged.pt output=models/es-en dtype=float32 overwrite=true
    nmt-evaluate ckpt=outputs/RUN report_dir=eval
    nmt-export ckpt=outputs/RUN output=models/es-en report=eval/report.json   # scores in the model card

The release holds model.safetensors, config.json, the tokenizer and README.md (a model
card); it is written aside and renamed into place, and replaces a non-empty folder only
with ``overwrite=true``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nmt.commands.app import hydra_command
from nmt.config import ExportConfig
from nmt.errors import CheckpointError, SettingError

log = logging.getLogger(__name__)


def read_report(path: str) -> dict:
    """An nmt-evaluate report.json, checked for the scores the model card shows."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SettingError(f"report={path}: not readable as an nmt-evaluate report.json ({err})") from None
    if not isinstance(report, dict) or not all(key in report for key in ("bleu", "chrf", "signatures")):
        raise SettingError(f"report={path}: not an nmt-evaluate report.json (no bleu, chrf and signatures)")
    return report


def run_export(cfg: ExportConfig) -> int:
    from nmt.architectures import count_parameters
    from nmt.checkpoint import read_checkpoint, resolve_checkpoint
    from nmt.model_card import model_card
    from nmt.release import DTYPES, WEIGHTS, export_release, is_release, output_problem

    if cfg.dtype not in DTYPES:
        raise SettingError(f"dtype={cfg.dtype}: expected one of {', '.join(DTYPES)}")
    source = resolve_checkpoint(cfg.ckpt)
    problem = output_problem(Path(cfg.output), cfg.overwrite, source)
    if problem:
        raise SettingError(problem)
    if is_release(source):
        raise CheckpointError(f"ckpt={cfg.ckpt}: already a release; export the checkpoint it was made from")
    report = read_report(cfg.report) if cfg.report is not None else None
    measured = str((report or {}).get("checkpoint") or "")
    if report is not None and (not Path(measured).exists() or not Path(measured).samefile(source)):
        log.warning("report=%s measured %s, not %s: its scores go in the model card as they are", cfg.report, measured, source)
    checkpoint = read_checkpoint(source)
    model = checkpoint.build_model()
    size = sum(t.numel() * DTYPES[cfg.dtype].itemsize for t in model.state_dict().values())
    card = model_card(checkpoint, count_parameters(model), cfg.dtype, size, report, cfg.output)
    del model
    output = export_release(checkpoint, cfg.output, cfg.dtype, cfg.overwrite, card)
    megabytes = (output / WEIGHTS).stat().st_size / 2**20
    print(f"nmt-export: {source} -> {output} ({cfg.dtype} weights, {megabytes:.1f} MiB); translate with ckpt={output}")
    return 0


main = hydra_command("export", ExportConfig, run_export)

if __name__ == "__main__":
    main()
