"""The output side of tokenize_local_bpe.py: token files (+ .gz) written through temporary paths by a
background thread, renamed into place all together (metadata last), and the cleanup of temporary
files that an interrupted (SIGKILLed) earlier run left beside those outputs."""
from __future__ import annotations

import gzip
import hashlib
import os
import queue
import re
import sys
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common import atomic_write_json, temp_file_beside

try:
    import fcntl
except ImportError:  # Windows: no flock, so no cleanup of other runs' leftovers
    fcntl = None

def temp_file_pattern(path: Path) -> re.Pattern:
    """The names common.temp_file_beside(path) makes: 8 hex digits (older runs, through mkstemp: [a-z0-9_])."""
    return re.compile(rf"\.tmp-{re.escape(path.name)}\.[a-z0-9_]{{8}}")



class TokenFileWriter:
    """One token file (+ its .gz), written through temporary paths; hashes the bytes and counts the
    tokens (the writer thread), the documents and the bytes of text they decode to (the caller)."""

    def __init__(self, bin_temp: Path, gz_temp: Path | None, bin_name: str, level: int) -> None:
        self.bin_file = open(bin_temp, "wb")
        self.gz_file = open(gz_temp, "wb") if gz_temp else None
        # mtime=0 and the .bin's final name in the header: the same ids always give the same .gz bytes
        self.gzip = gzip.GzipFile(filename=bin_name, mode="wb", fileobj=self.gz_file, compresslevel=level,
                                  mtime=0) if self.gz_file else None
        self.sha256 = hashlib.sha256()
        self.num_tokens = 0
        self.num_documents = 0
        self.num_bytes = 0

    def write(self, ids: np.ndarray) -> None:
        data = ids.tobytes()
        self.bin_file.write(data)
        if self.gzip:
            self.gzip.write(data)
        self.sha256.update(data)
        self.num_tokens += len(ids)

    def close(self, sync: bool = True, quiet: bool = False) -> None:
        try:
            if self.gzip:
                self.gzip.close()
            for f in (self.bin_file, self.gz_file):
                if f and not f.closed:
                    f.flush()
                    if sync:
                        os.fsync(f.fileno())
                    f.close()
        except Exception:
            if not quiet:  # quiet: cleaning up after the real error
                raise


class WriterThread(threading.Thread):
    """Writes [(split, ids), ...] batches to the split's TokenFileWriter in the background: zlib,
    sha256 and file writes release the GIL, so compression overlaps with encoding."""

    def __init__(self, files: list[TokenFileWriter]) -> None:
        super().__init__(daemon=True)
        self.files, self.queue, self.error = files, queue.Queue(maxsize=4), None

    def run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.error is None:
                try:
                    for split, ids in batch:
                        self.files[split].write(ids)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    self.error = e

    def put(self, batch: list[tuple[int, np.ndarray]]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.error = self.error or RuntimeError("stopped")
        while self.is_alive():  # the queue may be full: keep offering the end marker
            try:
                self.queue.put(None, timeout=0.1)
            except queue.Full:
                pass


class OutputFiles:
    """Temporary files beside their final paths; `commit` renames them all, metadata last."""

    def __init__(self) -> None:
        self.temp_of: dict[Path, Path] = {}

    def temp(self, final: Path) -> Path:
        self.temp_of[final] = temp_file_beside(final)
        return self.temp_of[final]

    def discard(self) -> None:
        for temp in self.temp_of.values():
            temp.unlink(missing_ok=True)

    def commit(self, metadata: list[tuple[Path, dict]], stale: Sequence[Path]) -> None:
        for path, _ in metadata:  # the old "complete" marker goes first: a crash now looks incomplete
            path.unlink(missing_ok=True)
        for final, temp in self.temp_of.items():
            os.replace(temp, final)
        self.temp_of.clear()
        for path in stale:
            if path.exists():
                path.unlink()
                print(f"removed stale {path} (not produced by this run)", file=sys.stderr)
        for path, meta in metadata:
            atomic_write_json(path, meta)


# ---------------------------------------------------------------------------- leftovers of interrupted runs

class OutputDirLock:
    """A shared flock on the output folder, held while this run writes there, so that a run can tell
    whether another one is live in the folder. The kernel drops it when its process dies, SIGKILL
    included, so a killed run holds nothing. `alone`: no other run held it when this one started."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir, self.fd, self.alone = out_dir, None, False
        if fcntl is None:
            return
        try:
            self.fd = os.open(out_dir, os.O_RDONLY)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.alone = True
            except BlockingIOError:  # another run is writing here: leave every temporary alone
                pass
            # downgrade, or join the other runs (waits only while one holds it for its cleanup)
            fcntl.flock(self.fd, fcntl.LOCK_SH)
        except OSError:  # a file system without locks: assume nothing, clean nothing
            self.release()
            self.alone = False

    def remove_stale_temps(self, finals: Iterable[Path], started: float) -> list[Path]:
        """Remove the temporaries of this run's own output names left by an interrupted run: only
        when no other run is live here, and only files older than this run's start."""
        if not self.alone:
            return []
        patterns = [temp_file_pattern(f) for f in finals]
        removed = []
        with os.scandir(self.out_dir) as entries:
            for e in entries:
                if not any(p.fullmatch(e.name) for p in patterns) or not e.is_file(follow_symlinks=False):
                    continue
                if e.stat(follow_symlinks=False).st_mtime >= started:
                    continue
                path = self.out_dir / e.name
                path.unlink(missing_ok=True)
                removed.append(path)
                print(f"removed stale temp file {path} from an interrupted run", file=sys.stderr)
        return removed

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None
