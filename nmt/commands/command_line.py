"""How a command line is spelled: settings are ``key=value``; the keys of ``nmt.config``'s
schemas, nested groups included. Used by ``nmt.commands.app`` before Hydra reads anything."""

from __future__ import annotations

import types
import typing
from typing import Any

from nmt.config import dataclass_of

# Hydra's own options: those that take a value, those that may (--info), and flags.
HYDRA_OPTIONS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
HYDRA_OPTIONS |= {"--experimental-rerun"}
INFO = {"--info", "-i"}
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--resolve", "--run", "-r", "--multirun", "-m"}
HYDRA_FLAGS |= {"--shell-completion", "-sc", "--"}


def _hydra_option(name: str) -> str:
    """``name`` as Hydra's argparse reads it: a unique prefix of a long option is that option."""
    longs = [option for option in HYDRA_OPTIONS | HYDRA_FLAGS | INFO if option.startswith("--")]
    matches = [option for option in longs if option.startswith(name)] if name.startswith("--") and len(name) > 2 else []
    return matches[0] if len(matches) == 1 else name


def spelling_problem(argv: list[str], schema: type, command: str) -> str | None:
    """Settings written as options (``--ckpt X``, ``--beam_size=5``) or apart (``ckpt runs/x``):
    one line that shows the command line as it must be written (``key=value``, a key of a
    group under its group: ``decode.beam_size``), or None where every argument is spelled
    as Hydra reads it."""
    fixed, wrong, args = [], False, list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name = _hydra_option(arg.split("=", 1)[0])
        if name in HYDRA_FLAGS or arg.startswith(("~", "+")) or (name in HYDRA_OPTIONS | INFO and "=" in arg):
            fixed.append(arg)
        elif name in HYDRA_OPTIONS:  # --cfg job
            fixed += args[i : i + 2]
            i += 1
        elif name in INFO:  # --info, or --info config
            fixed.append(arg)
            if i + 1 < len(args) and args[i + 1] in INFO_CHOICES:
                fixed.append(args[i + 1])
                i += 1
        elif arg.startswith("-") and not arg.lstrip("-")[:1].isdigit():  # --ckpt X, --beam_size=5, --beam-size 5
            key, equals, value = arg.lstrip("-").partition("=")
            key = qualified(key.replace("-", "_"), schema)
            if not equals:
                flag = _annotation(key, schema) is bool
                takes_next = i + 1 < len(args) and not args[i + 1].startswith("--")
                value = args[i + 1] if takes_next else ("true" if flag else "...")
                i += takes_next
            fixed.append(f"{key}={value}")
            wrong = True
        elif "=" not in arg and (qualified(arg, schema) != arg or _annotation(arg, schema) is not None):  # ckpt runs/x
            fixed.append(f"{qualified(arg, schema)}={args[i + 1] if i + 1 < len(args) else '...'}")
            i += 1
            wrong = True
        else:
            fixed.append(arg)
        i += 1
    if not wrong:
        return None
    return f"settings are written key=value: try {command} {' '.join(fixed)}"


def qualified(key: str, schema: type) -> str:
    """``key`` as the command line must write it: itself if it is a setting of ``schema``, else
    the one setting of a group that has that name (``beam_size`` -> ``decode.beam_size``)."""
    if _annotation(key, schema) is not None:
        return key
    found = _nested_keys(key.split(".")[-1], schema)
    return found[0] if len(found) == 1 else key


def _nested_keys(name: str, schema: type, prefix: str = "") -> list[str]:
    """Every dotted key below ``schema`` whose last part is ``name``."""
    found = []
    for field_name, hint in typing.get_type_hints(schema).items():
        nested = dataclass_of(hint)
        if field_name == name and prefix:
            found.append(f"{prefix}{field_name}")
        if nested is not None:
            found += _nested_keys(name, nested, f"{prefix}{field_name}.")
    return found


def _annotation(key: str, schema: type) -> Any:
    """The type of the dotted ``key`` in ``schema`` (nested), or None if it is no field there."""
    annotation = None
    for part in key.split("."):
        hints = typing.get_type_hints(schema) if schema is not None else {}
        if part not in hints:
            return None
        annotation = hints[part]
        schema = dataclass_of(annotation)
    return annotation


def _required(annotation: Any) -> Any:
    """``Optional[X]`` -> X; anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        return others[0] if len(others) == 1 else annotation
    return annotation
