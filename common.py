"""Small helpers the scripts share: one-line errors, atomic writes, checkpoint folders, devices.
Kept deliberately tiny: anything used by only one script lives in that script."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence


class UserError(ValueError):
    """A bad input the user can fix; its message (the one line we print) names the file or flag, the value, the fix."""


def cli_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's main(argv); a failure becomes one `error:` line and a non-zero exit (a traceback with --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - last line of defence for the CLI
        if "--debug" in args or os.environ.get("GPT_DEBUG") == "1":
            raise
        if isinstance(e, UserError):
            line = str(e)
        elif isinstance(e, OSError):  # a path that cannot be read or written: the user can fix it
            line = (f"cannot read or write{f' {e.filename}' if e.filename else ''}: {e.strerror or e}; check the path, "
                    f"free disk space or choose another output location")
        else:
            line = f"{type(e).__name__}: {first_line(e, 300)} (rerun with --debug for the traceback)"
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2 if isinstance(e, (UserError, OSError)) else 1)  # 2: a bad input, 1: a bug
    sys.exit(code or 0)


class ArgParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one `error:` line (through cli_main), not the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters: enough for a one-line error."""
    return (str(error).strip().splitlines() or [""])[0][:limit]


def temp_file_beside(path: Path) -> Path:
    """A new empty file .tmp-NAME.XXXXXXXX beside `path` (8 random hex digits), with open()'s usual mode."""
    tmp = path.with_name(f".tmp-{path.name}.{secrets.token_hex(4)}")
    tmp.touch(exist_ok=False)  # O_EXCL: never someone else's file
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed over it on success and removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temp_file_beside(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)  # `path` is either the old file or the whole new one
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder .tmp-NAME-XXXXXXXX beside `final` that replaces `final` whole on success."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)  # fails if it exists: never someone else's folder
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    try:
        yield tmp
        if final.exists():  # moved aside, then removed: a crash never leaves a half-written folder named `final`
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike, what: str = "JSON file", fix: str = "regenerate it") -> dict[str, Any]:
    """The JSON object in a file, or a UserError naming the file and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path} (check the path)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):  # every file we read is an object: [1, 2] is as broken as bad syntax
        raise UserError(f"{what} {path} holds a {type(data).__name__}, not a JSON object; {fix}")
    return data


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint folder `path` stands for: the step folder that the trainer's D/latest names, else D."""
    d = Path(path)
    if not d.exists():
        raise UserError(f"checkpoint directory not found: {d} (pass the --checkpoint_dir the trainer wrote)")
    pointer = d / "latest"
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (d / name / "config.json").is_file():
            return d / name
        raise UserError(f"{pointer} points to '{name}', which has no config.json; "
                        f"delete {pointer} or point it at a complete step_* folder")
    if (d / "config.json").is_file():
        return d
    raise UserError(f"no checkpoint in {d}: expected {d}/latest or {d}/config.json")


def pick_device(requested: str | None = None) -> "torch.device":  # noqa: F821
    """'cuda' > 'mps' > 'cpu' when `requested` is None or 'auto'; otherwise validate it."""
    import torch  # here, not at the top: scripts that never touch a device start without torch
    mps = torch.backends.mps.is_available()
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: no CUDA GPU is visible to torch "
                        f"(torch {torch.__version__}); use --device cpu or install a CUDA build")
    if dev.type == "mps" and not mps:
        raise UserError(f"--device {requested}: MPS is not available here; use --device cpu")
    return dev


def cuda_has_native_bf16(device: "torch.device") -> bool:  # noqa: F821
    """bf16 tensor cores: Ampere (sm80) and later."""
    import torch
    # not torch.cuda.is_bf16_supported(): it says yes for T4/V100 too, where bf16 is emulated and slow (fp16 there)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
