"""Text lines exactly as a user means them: split on "\\n" only, one encoding (UTF-8), and
errors that name the file and line. Every reader of user text (corpus files, nmt-translate's
input, hypotheses and references) goes through here, so line N is line N everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nmt.errors import CorpusError


def split_lines(raw: bytes, name: str, replace_invalid: bool = False) -> list[str]:
    """Decode UTF-8 bytes into lines split on "\\n" only.

    ``str.splitlines`` would also split on "\\r", U+0085 and U+2028, shifting every
    later line against its translation. A trailing "\\r" per line (CRLF files) and a
    leading byte-order mark are dropped. Invalid UTF-8 is an error naming ``name``
    and the line, or (``replace_invalid``) becomes U+FFFD.
    """
    return _decode_lines(raw, name, 1, replace_invalid, at_start=True)


def _decode_lines(raw: bytes, name: str, first_line: int, replace_invalid: bool, at_start: bool) -> list[str]:
    """``split_lines`` of a piece of a file whose first line is number ``first_line``."""
    try:
        text = raw.decode("utf-8", errors="replace" if replace_invalid else "strict")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)  # only on failure: which line is it?
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1)
        raise CorpusError(
            f"{name}:{line}: invalid UTF-8 ({err.reason} at byte {column + 1} of the line); re-encode the input as UTF-8"
        ) from None
    if at_start:
        text = text.removeprefix("\ufeff")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def line_chunks(
    stream: BinaryIO, name: str, replace_invalid: bool = False, max_lines: int = 5000, max_bytes: int = 1 << 24
) -> Iterator[list[str]]:
    """The lines of a binary stream, exactly as ``split_lines`` splits them, in chunks of at
    most ``max_lines`` lines (and about ``max_bytes``): memory stays flat whatever the
    input's size. A chunk also ends where a pipe has nothing more for now, so that lines
    typed or piped in slowly are translated as they come, not at the end."""
    read = getattr(stream, "read1", stream.read)  # read1: what is there, without waiting for a full block
    pending, lines, size, first_line, at_start, block_size = [], [], 0, 1, True, 1 << 20
    while True:
        block = read(block_size)
        waiting = len(block) < block_size  # the end, or all a pipe holds for now
        cut = block.rfind(b"\n") + 1 if block else len(block)  # at the end: the last line, unterminated
        if block and not cut:
            pending.append(block)  # inside one long line: kept as blocks, joined once when it ends
        else:
            raw = b"".join([*pending, block[:cut]]) if pending else block[:cut]
            pending = [block[cut:]] if block else []
            if raw:
                decoded = _decode_lines(raw, name, first_line, replace_invalid, at_start)
                first_line += raw.count(b"\n")
                at_start = False
                lines += decoded
                size += len(raw)
        while len(lines) >= max_lines or (lines and (size >= max_bytes or waiting)):
            chunk, lines = lines[:max_lines], lines[max_lines:]
            size = 0 if not lines else size
            yield chunk
        if not block:
            return


def read_lines(path: Path, replace_invalid: bool = False) -> list[str]:
    """The lines of a UTF-8 file (see ``split_lines``)."""
    return split_lines(Path(path).read_bytes(), str(path), replace_invalid)
