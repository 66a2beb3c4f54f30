"""File helpers shared by every writer: output targets, atomic writes and digests.

One rule for everything a command writes (:func:`check_output`): an existing target is
refused unless the caller says ``force``, before any slow work starts, and writers
call it again just before they write, in case the target appeared meanwhile. Files are
written to a temporary sibling and renamed (:func:`atomic_write`), so an interrupted
write never leaves a torn file or a half-replaced old one, and they get the usual
permissions (the user's umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

OutputKind = Literal["file", "dir"]


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks (checkpoints are large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output(
    path: str | Path,
    *,
    kind: OutputKind,
    force: bool,
    option: str = "--out",
) -> Path:
    """Refuse to write ``path`` where that would replace or mix with what is there.

    A ``file`` target must not be a folder, its folder must exist (a typo in a path is
    not silently created), and it must not exist unless ``force``. A ``dir`` target must
    not be a file, and must be missing (it is created with its parents) or empty unless
    ``force`` (then the writer writes into it). Nothing is created here.

    Args:
        path: the target.
        kind: ``"file"`` or ``"dir"``.
        force: the user passed ``--force``.
        option: the command-line option that named the target, for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: the target exists (or holds files) and ``force`` is false.
        FileNotFoundError: the folder of a file target does not exist.
        ValueError: a file target that is a folder, or a folder target that is a file.
    """
    target = Path(path)
    if kind == "file":
        if target.is_dir():
            raise ValueError(f"{option} '{target}' is a folder; give a file name")
        if not target.parent.is_dir():
            raise FileNotFoundError(f"cannot write {option} '{target}': folder "
                                    f"'{target.parent}' does not exist")
        if target.exists() and not force:
            raise FileExistsError(f"{option} '{target}' already exists; choose another name "
                                  "or pass --force to replace it")
        return target
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} '{target}' is a file; give a folder")
    if not force and target.is_dir():
        held = sorted(p.name for p in target.iterdir())
        if held:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise FileExistsError(f"{option} '{target}' already holds files ({shown}); choose "
                                  "a new or empty folder, or pass --force to write into it")
    return target


def check_outputs(paths: Iterable[str | Path], *, force: bool, option: str = "--out") -> None:
    """:func:`check_output` for several files that one command writes together."""
    for path in paths:
        check_output(path, kind="file", force=force, option=option)


def atomic_write(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file onto ``target``.

    The temporary file is created beside ``target`` (same file system, so the rename is
    atomic) with mode 0666 less the umask, as a plain ``open`` would, and keeps that mode
    whatever ``write`` does to it (safetensors replaces the file with one of mode 0600).
    It is removed if ``write`` fails.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = stat.S_IMODE(temp.stat().st_mode)
    try:
        write(temp)
        temp.chmod(mode)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` through :func:`atomic_write`."""
    return atomic_write(target, lambda temp: temp.write_text(text, encoding="utf-8"))



def read_text(path: str | Path, *, expected: str = "text") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is a folder or is not UTF-8 text, naming the file, the first
            bad byte and what was ``expected`` ("a CSV file").
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder, not {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"no file '{path}' ({expected} was expected)")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"'{path}' is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                         f"{err.start}); {expected} was expected") from None
