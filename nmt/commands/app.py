"""What every command shares: the Hydra schemas, a ``main`` built from a schema, a
config name and a run function, command-line checks before Hydra, errors as one line."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, ValidationError

from nmt.commands.command_line import _annotation, _nested_keys, _required, spelling_problem
from nmt.config import (
    CONF_DIR,
    AverageConfig,
    EmbedConfig,
    EvaluateConfig,
    ExportConfig,
    ScoreConfig,
    ServeConfig,
    TrainRunConfig,
    TranslateConfig,
    check_ranges,
    dataclass_of,
)
from nmt.errors import NmtError, SettingError
from nmt.launch import copy_to_log_files
from nmt.run_folder import claim_new_folder

# Errors whose message already says which file, line or setting is at fault.
USER_ERRORS: tuple[type[Exception], ...] = (
    NmtError,
    OSError,
    ValueError,
    RuntimeError,
    MissingMandatoryValue,
    ValidationError,
)

# Config groups in no defaults list, added with ``+group=NAME``, and the schema they extend.
ADDED_GROUPS = {"experiment": TrainRunConfig}  # conf/experiment: nmt-train's recipes

# The shell's status for a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130

SCHEMAS = {
    "train_schema": TrainRunConfig,
    "translate_schema": TranslateConfig,
    "evaluate_schema": EvaluateConfig,
    "score_schema": ScoreConfig,
    "average_schema": AverageConfig,
    "export_schema": ExportConfig,
    "embed_schema": EmbedConfig,
    "serve_schema": ServeConfig,
}

if not OmegaConf.has_resolver("nmt_root"):
    OmegaConf.register_new_resolver("nmt_root", lambda: str(CONF_DIR.parent))
_claimed: dict[str, Path] = {}  # default run-folder name -> the folder this process created for it


def run_folder_for(resume: str | None, default: str) -> str:
    """``${nmt_run_folder:${resume},DEFAULT}``, nmt-train's hydra.run.dir: a resumed run's
    own folder, else a new folder claimed under the default name (``NAME-2`` when taken),
    the same one however often Hydra resolves it."""
    if resume:
        return str(resume)
    if default not in _claimed:
        _claimed[default] = claim_new_folder(default).resolve()
    return str(_claimed[default])


def claimed_run_folders() -> set[Path]:
    return set(_claimed.values())


if not OmegaConf.has_resolver("nmt_run_folder"):
    OmegaConf.register_new_resolver("nmt_run_folder", run_folder_for)


def hydra_subdir_for(run_dir: str, now: str) -> str:
    """``${nmt_hydra_subdir:${hydra.run.dir},NOW}``, nmt-train's hydra.output_subdir: ``.hydra``
    for a folder's first session, ``.hydra/NOW`` once that holds another's record."""
    return f".hydra/{now}" if (Path(run_dir) / ".hydra" / "overrides.yaml").exists() else ".hydra"


if not OmegaConf.has_resolver("nmt_hydra_subdir"):
    OmegaConf.register_new_resolver("nmt_hydra_subdir", hydra_subdir_for)


def register_configs() -> None:
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)


register_configs()


def hydra_command(
    config_name: str,
    schema: type,
    run: Callable[[Any], int],
    check: Callable[[dict[str, str]], None] | None = None,
    on_exit: Callable[[int | None], None] | None = None,
) -> Callable[[], None]:
    """A console script's ``main``: check the command line against ``schema`` (and with
    ``check``, given the plain overrides) before Hydra creates anything, compose
    ``conf/<config_name>.yaml``, then run ``run`` on the typed config. ``on_exit`` sees the
    exit code before the process ends (e.g. to remove a failed run's folder)."""

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def hydra_main(cfg: DictConfig) -> None:
        try:
            run_cli(run, cfg)
        except SystemExit as exit_:
            if on_exit is not None:
                on_exit(exit_.code)
            raise
        except KeyboardInterrupt:  # Ctrl-C at a prompt or while decoding, or twice while training
            if on_exit is not None:
                on_exit(INTERRUPTED_EXIT_CODE)
            if os.environ.get("NMT_DEBUG"):
                raise
            message = f"nmt-{config_name}: interrupted (Ctrl-C)"
            print("\n" * sys.stderr.isatty() + message, file=sys.stderr)  # a prompt or a bar may end mid-line
            copy_to_log_files(message, logging.WARNING)
            sys.exit(INTERRUPTED_EXIT_CODE)
        except BaseException:  # a traceback: NMT_DEBUG=1, a bug, CUDA out of memory
            if on_exit is not None:
                on_exit(1)
            raise

    def main() -> None:
        overrides = check_command_line(schema, f"nmt-{config_name}")
        if check is not None:
            check(overrides)
        hydra_main()

    return main


def run_cli(command, cfg) -> None:
    """Run ``command`` on the typed config; exit with its return code, or 1 with the error's message.

    Set NMT_DEBUG=1 to see the full traceback instead.
    """
    try:
        settings = to_object(cfg)  # a missing ckpt=... surfaces here
        check_ranges(settings)
        code = command(settings)
    except USER_ERRORS as err:
        if os.environ.get("NMT_DEBUG"):
            raise
        if isinstance(err, MissingMandatoryValue):
            message = f"{err.full_key} is required: add {err.full_key}=... to the command line"
        else:
            message = str(err)
        refuse(message)
    sys.exit(code or 0)


def refuse(message: str) -> NoReturn:
    """Exit 1 with ``message`` as one line on stderr (and in the run's log file, if any)."""
    print(f"error: {message}", file=sys.stderr)
    copy_to_log_files(f"error: {message}", logging.ERROR)
    sys.exit(1)


# --------------------------------------------------------------------------- configs


def to_object(cfg: DictConfig | Any) -> Any:
    """Resolve a composed DictConfig into its dataclass instance.

    Raises SettingError for a key the schema lacks: Hydra rejects ``train.max_stpes=5``
    itself, but ``+train.max_stpes=5`` adds the key, and OmegaConf would carry it as an
    attribute that nothing reads."""
    if isinstance(cfg, DictConfig):
        unknown = unknown_keys(cfg)
        if unknown:
            raise SettingError(" | ".join(unknown))
        return OmegaConf.to_object(cfg)
    return cfg


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """One message per key of ``cfg`` (nested) that its dataclass schema does not declare."""
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return []
    known = [f.name for f in dataclasses.fields(schema)]
    problems = []
    for key in cfg.keys():
        name = f"{prefix}{key}"
        if key not in known:
            problems.append(_unknown(str(key), prefix, known, schema))
        elif not OmegaConf.is_missing(cfg, key) and not OmegaConf.is_interpolation(cfg, key):
            child = cfg[key]
            if isinstance(child, DictConfig):
                problems += unknown_keys(child, f"{name}.")
    return problems


def _unknown(name: str, prefix: str, known: list[str], schema: type) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"the settings there: {', '.join(known)}"
    below = _nested_keys(name, schema)
    if len(below) == 1:  # beam_size=5: a setting of the decode group
        hint = f"it is a setting of a group: did you mean {prefix}{below[0]}?"
    if not prefix and name in ("model", "data") and "ckpt" in known:  # a checkpoint carries both
        hint = f"the {name} comes from the checkpoint (ckpt=); {hint}"
    return f"{prefix}{name} is not a setting ({schema.__name__} in nmt/config.py); {hint}"


# --------------------------------------------------------------------------- the command line


def command_line_overrides(argv: list[str]) -> dict[str, str]:
    """Plain ``key=value`` overrides among ``argv``, parsed as Hydra parses them (quotes,
    escapes, ``null``), for checks that must happen before Hydra composes the config or
    creates a folder. Deletions (``~key``), sweeps (``a,b``), nulls, dicts and interpolations
    are left out; anything Hydra cannot parse is left to Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = {}
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
            continue
        value = None if override.is_delete() or override.is_sweep_override() else override.value()
        if value is not None and "${" not in str(value) and not isinstance(value, dict):  # model={hidden_size:64}: Hydra's
            overrides[override.key_or_group] = value if isinstance(value, str) else str(value)
    return overrides


def check_command_line(schema: type, command: str = "nmt-train") -> dict[str, str]:
    """The command line's plain overrides, after refusing (in one line, before Hydra makes
    anything) any that cannot work with ``schema``: see ``spelling_problem`` and ``setting_problem``."""
    problem = spelling_problem(sys.argv[1:], schema, command)
    if problem:
        refuse(problem)
    multirun = any(arg == "-m" or "--multirun".startswith(arg) and arg.startswith("--m") for arg in sys.argv[1:])
    multirun = multirun or "hydra.mode=MULTIRUN" in sys.argv[1:]
    for arg in sys.argv[1:]:
        problem = override_problem(arg, schema, multirun)
        if problem:
            refuse(problem)
    overrides = command_line_overrides(sys.argv[1:])
    for key, value in overrides.items():
        problem = setting_problem(key, value, schema)
        if problem:
            refuse(problem)
    return overrides


def override_problem(arg: str, schema: type, multirun: bool = False) -> str | None:
    """Why Hydra would refuse the override ``arg``, in one line instead of its several: its
    syntax, a sweep outside ``--multirun``, the ``+`` of adding to a key that exists, or a
    value of the wrong shape (a null group, one value for a group of settings or a list)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):  # --cfg job, ~key
        return None
    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except Exception as err:  # noqa: BLE001 - Hydra's grammar errors have no common class
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{arg}: Hydra cannot read this override ({reason}); see https://hydra.cc/docs/advanced/override_grammar/basic/"
    key = override.key_or_group
    if ADDED_GROUPS.get(key) is schema and not arg.startswith(("+", "~")):  # experiment=NAME
        return f"{arg}: {key} is added to the defaults, not chosen in them: write +{arg}"
    annotation = _annotation(key, schema)
    if annotation is None and key not in ADDED_GROUPS and not key.startswith("hydra"):
        return setting_problem(key.split(".")[0] if override.is_sweep_override() else key, "", schema)
    if override.is_sweep_override():
        if multirun:
            return None
        listed = annotation is Any or typing.get_origin(_required(annotation)) is list
        hint = f"a list is written '{key}=[a,b]'" if listed else "add --multirun to run one job per value"
        return f"{arg}: a comma makes a sweep of several runs; {hint}"
    value, group = override.value(), CONF_DIR / key.replace(".", "/")
    if annotation is None or (override.is_delete() and group.is_dir()) or "${" in arg:  # Hydra resolves ${...}
        return None
    if override.is_delete():
        return f"{arg}: a setting cannot be removed, only set: {key}=..."
    if override.is_add() and not arg.startswith("++") and key not in ADDED_GROUPS:
        return f"{arg}: {key} is there already; '+' only adds a new key: write {arg.lstrip('+')}"
    nested, required = dataclass_of(annotation), _required(annotation)
    optional = annotation is Any or required is not annotation
    if value is None and group.is_dir():
        options = ", ".join(sorted(path.stem for path in group.glob("*.yaml")))
        default = f"leave {key}= out for its default, or choose" if optional else "choose"
        return f"{arg}: {default} one of its options in conf/{key.replace('.', '/')}: {options}"
    if value is None and not optional:
        return f"{arg}: {key} cannot be null; give it a value"
    if nested is not None and not group.is_dir() and value is not None and not isinstance(value, dict):
        first = dataclasses.fields(nested)[0].name
        return (
            f"{arg}: {key} is a group of settings ({nested.__name__} in nmt/config.py), not one value: "
            f"set them one by one, e.g. {key}.{first}=..."
        )
    if typing.get_origin(required) is list and value is not None:
        (item,) = typing.get_args(required)
        kinds = {float: "numbers", int: "whole numbers"}
        if not isinstance(value, list):
            example = f"'{key}=[{value}]' or " if not str(value).startswith("[") else ""
            return f"{arg}: {key} is a list: write {example}'{key}=[a,b]' (brackets outside any quotes)"
        if item in kinds and not all(_parses_as(str(v), item) for v in value):
            return f"{arg}: expected a list of {kinds[item]}"
    return None


def setting_problem(key: str, value: str, schema: type) -> str | None:
    """Why ``key=value`` on the command line cannot work with ``schema``, in one line, or None.

    Checked before Hydra, whose own messages span several lines and suggest ``+key``
    for a misspelling: the key (with the closest real one), a group's option (with the
    options in conf/), and the type of a number or flag. Anything else is left to Hydra.
    """
    if key.startswith("hydra"):  # hydra.run.dir=..., hydra/job_logging=...: Hydra's own
        return None
    if key in ADDED_GROUPS:
        if ADDED_GROUPS[key] is not schema:
            return f"+{key}={value}: conf/{key} extends {ADDED_GROUPS[key].__name__}, not {schema.__name__}"
        return _option_problem(key, value, spelled=f"+{key}")
    schema_now, prefix = schema, ""
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(schema_now)
        if part not in hints:
            return _unknown(part, prefix, list(hints), schema_now)
        nested = dataclass_of(hints[part])
        if depth < len(parts) - 1:
            if nested is None:
                return f"{prefix}{part} is one setting, not a group of settings: {key}=... cannot work"
            schema_now, prefix = nested, f"{prefix}{part}."
            continue
        group = CONF_DIR / key.replace(".", "/")
        if nested is not None and group.is_dir():  # e.g. model=small: a file in conf/model
            problem = _option_problem(key, value)
            if problem:
                return problem
        kinds = {int: "a whole number", float: "a number", bool: "true or false"}
        annotation = hints[part]  # a number, a flag, or Optional[one of them]; lists are left to Hydra
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        alternatives = typing.get_args(annotation) if union else (annotation,)
        kind = next((k for k in kinds if k in alternatives), None)
        if kind is not None and not _parses_as(value, kind):
            return f"{key}={value}: expected {kinds[kind]}"
    return None


def _option_problem(group: str, value: str, spelled: str = "") -> str | None:
    """Why ``group=value`` (``spelled=value`` on the command line) names no file
    ``conf/<group>/<value>.yaml``, or None."""
    options = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
    if value in options:
        return None
    spelled = spelled or group
    close = difflib.get_close_matches(value, options, n=1)
    hint = f" (did you mean {spelled}={close[0]}?)" if close else ""
    if group == "data" and ("/" in value or Path(value).exists()):
        hint = f" (a folder of text files: data=files data.path={value})"
    return f"{spelled}={value}: no such option; choose from {', '.join(options)}{hint}"


def _parses_as(value: str, kind: type) -> bool:
    if kind is bool:
        return value.lower() in ("true", "false")
    try:
        kind(value)
    except ValueError:
        return False
    return kind is not int or "." not in value
