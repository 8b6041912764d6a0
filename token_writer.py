"""The output side of tokenize_local_bpe.py: token files (+ .gz) written through temporary paths by a
background thread, renamed into place all together (metadata last), and the cleanup of temporary
files that an interrupted (SIGKILLed) earlier run left beside those outputs."""
from __future__ import annotations

import gzip
import hashlib
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common import atomic_write_json, temp_file_beside, temp_file_pattern

try:
    import fcntl
except ImportError:  # Windows: no flock, so no cleanup of other runs' leftovers
    fcntl = None


class Sink:
    """One token file (+ its .gz), written through temporary paths; counts and hashes the bytes."""

    def __init__(self, bin_tmp: Path, gz_tmp: Path | None, gz_name: str, level: int) -> None:
        self.bin = open(bin_tmp, "wb")
        self.gz_raw = open(gz_tmp, "wb") if gz_tmp else None
        self.gz = gzip.GzipFile(filename=gz_name, mode="wb", fileobj=self.gz_raw, compresslevel=level,
                                mtime=0) if self.gz_raw else None
        self.sha = hashlib.sha256()
        self.num_tokens = 0
        self.num_documents = 0

    def write(self, ids: np.ndarray) -> None:
        data = ids.tobytes()
        self.bin.write(data)
        if self.gz:
            self.gz.write(data)
        self.sha.update(data)
        self.num_tokens += len(ids)

    def close(self, sync: bool = True, quiet: bool = False) -> None:
        try:
            if self.gz:
                self.gz.close()
            for f in (self.bin, self.gz_raw):
                if f and not f.closed:
                    f.flush()
                    if sync:
                        os.fsync(f.fileno())
                    f.close()
        except Exception:
            if not quiet:  # quiet: cleaning up after the real error
                raise


class Writer(threading.Thread):
    """Writes (split, ids) batches in the background: zlib, sha256 and file writes release the GIL,
    so compression overlaps with encoding."""

    def __init__(self, sinks: list[Sink]) -> None:
        super().__init__(daemon=True)
        self.sinks, self.queue, self.error = sinks, queue.Queue(maxsize=4), None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    for split, ids in item:
                        self.sinks[split].write(ids)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

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


class Outputs:
    """Temporary files beside their targets; `commit` renames them all, metadata last."""

    def __init__(self) -> None:
        self.tmp: dict[Path, Path] = {}

    def temp(self, final: Path) -> Path:
        self.tmp[final] = temp_file_beside(final)
        return self.tmp[final]

    def discard(self) -> None:
        for t in self.tmp.values():
            t.unlink(missing_ok=True)

    def commit(self, metadata: list[tuple[Path, dict]], stale: Sequence[Path]) -> None:
        for path, _ in metadata:  # the old "complete" marker goes first: a crash now looks incomplete
            path.unlink(missing_ok=True)
        for final, tmp in self.tmp.items():
            os.replace(tmp, final)
        self.tmp.clear()
        for path in stale:
            if path.exists():
                path.unlink()
                print(f"removed stale {path} (not produced by this run)", file=sys.stderr)
        for path, meta in metadata:
            atomic_write_json(path, meta)


# ---------------------------------------------------------------------------- leftovers of interrupted runs

class RunLock:
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
