"""What both HuggingFace converters (export_hf.py, import_hf.py) share: which of our weights HF
GPT-2 stores transposed, and how an --out_dir folder is checked and written."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from common import UserError, atomic_dir, first_line

# Our nn.Linear weights (out, in) that HF GPT-2 stores as Conv1D weights (in, out), i.e. transposed.
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_conv1d_key(key: str) -> bool:
    return key.startswith("transformer.h.") and key.endswith(CONV1D_SUFFIXES)


def check_replaceable(out_dir: Path, source: Path | None, flag: str = "--out_dir") -> None:
    """An existing out_dir is replaced only when it looks like an earlier export/import (config.json,
    no subfolders): a mistyped path never wipes a training run or a home folder."""
    if source is not None and out_dir.resolve() == source.resolve():
        raise UserError(f"{flag} {out_dir} is the input folder itself; pick a new folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"{flag} {out_dir} exists and is a file; pick a folder path")
    entries = list(out_dir.iterdir())
    if entries and (not (out_dir / "config.json").is_file() or any(e.is_dir() for e in entries)):
        raise UserError(f"{flag} {out_dir} exists and is not an earlier export (no config.json, or subfolders); "
                        f"remove it or pick a new folder")


def write_folder_atomically(out_dir: str | os.PathLike, files: dict[str, str | bytes],
                            write_more: Callable[[Path], object] | None = None) -> Path:
    """Build the folder as a temporary sibling, then rename it into place (replacing an old one)."""
    out_dir = Path(out_dir)
    try:
        with atomic_dir(out_dir) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
            if write_more is not None:
                write_more(tmp)
    except UserError:
        raise
    except Exception as err:  # a full disk, a path under a file, a safetensors I/O error ...
        raise UserError(f"cannot write --out_dir {out_dir}: {first_line(err, 160)}; free disk space or choose another "
                        f"--out_dir") from None
    return out_dir
