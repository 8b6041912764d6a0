"""The model side of serve.py: one worker thread that owns the model and runs the requests.

Torch forward passes from several threads would only fight over the same cores, so one thread runs
them all. Requests wait in a bounded FIFO queue (a full queue refuses: serve.py answers 429). The
worker takes the request at the head and, with it, every waiting request that samples alike (same
endpoint, max_tokens, temperature, top_p and stop; greedy, or no seed), at most max_batch, and runs
them as one left-padded batch through `generate.stream_batch`, every reply streamed token by token.
With 32 streaming clients on a `tiny` model, batching answers several times sooner and serves several
times the tokens/s of serving them in turn (max_batch=1; bench/bench_serve.py, 2 CPU cores).

A client that leaves sets its job's `cancelled`: a waiting job is dropped (and frees its room in
the queue), a running one leaves its batch at the next token (a lone one ends the generation).
"""
import collections
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from common import first_line

DEFAULT_MAX_BATCH = 32    # bench/results/serve.md: batched beats serving in turn at 32 clients


@dataclass(frozen=True)
class Sampling:
    """A request's sampling settings, with the OpenAI API's names (temperature 0 = greedy)."""
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


@dataclass
class Job:
    """One request as the worker sees it. `emit` is thread-safe: it hands an event to the request's
    handler, ("piece", text) zero or more times, then ("done", usage) or ("error", message)."""
    prompt: str            # exactly as fed to the model (the chat template already applied)
    chat: bool
    sampling: Sampling
    emit: Callable[[str, Any], None] = lambda kind, payload: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    pieces: int = 0

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share a batch (None: only alone). Row b of a batch
        is seeded seed + b, so a seeded sampling request runs alone to stay reproducible."""
        s = self.sampling
        if s.seed is not None and s.temperature > 0:
            return None
        return (self.chat, s.max_tokens, s.temperature, s.top_p, s.stop)


class QueueFull(Exception):
    pass


class Engine:
    """Runs jobs on one worker thread: the head of a bounded FIFO plus the waiting jobs that can
    share its batch (up to max_batch; 1 = strictly one at a time)."""

    def __init__(self, model, tokenizer, max_queue: int = 64, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        from generate import stream_batch  # torch: imported with the model, not for --help

        self.model, self.tokenizer = model, tokenizer
        self._stream_batch = stream_batch
        self.max_queue, self.max_batch = max_queue, max_batch
        self.stats = collections.Counter()
        self.recent: collections.deque[dict] = collections.deque(maxlen=256)  # {"status", "pieces", "batch"}
        self._queue: collections.deque[Job] = collections.deque()
        self._running = 0
        self._cond = threading.Condition()
        self._stopping = False
        tokenizer.encode("warm up")  # builds any lazy encoder before two threads can use it
        self._thread = threading.Thread(target=self._work, name="serve-model", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._drop_cancelled()  # requests whose clients left hold no room
            if len(self._queue) >= self.max_queue:
                raise QueueFull
            self._queue.append(job)
            self.stats["requests"] += 1
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            waiting = sum(not job.cancelled.is_set() for job in self._queue)
            return {"queued": waiting, "running": self._running, **self.stats}

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing waits or runs (False after `timeout` seconds)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._running, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _next_batch(self) -> list[Job] | None:
        """The head job and the waiting jobs that can join it (queue order kept); None to stop."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._queue or self._stopping:
                    break
                self._cond.wait()
            if self._stopping:
                return None
            head = self._queue.popleft()
            batch, key, rest = [head], head.batch_key(), collections.deque()
            while self._queue:
                job = self._queue.popleft()
                if key is not None and len(batch) < self.max_batch and job.batch_key() == key \
                        and not job.cancelled.is_set():
                    batch.append(job)
                else:
                    rest.append(job)
            self._queue = rest
            self._running = len(batch)
            return batch

    def _drop_cancelled(self) -> None:
        """Forget the waiting jobs whose clients have left (the caller holds the lock)."""
        for job in [j for j in self._queue if j.cancelled.is_set()]:
            self._queue.remove(job)
            self._record(job, "cancelled", 0)

    def _record(self, job: Job, status: str, batch: int) -> None:
        with self._cond:
            self.stats[status] += 1
            self.recent.append({"status": status, "pieces": job.pieces, "batch": batch})
            self._cond.notify_all()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if not job.cancelled.is_set()]
            for job in batch:
                if job.cancelled.is_set():  # its client left while it waited
                    self._record(job, "cancelled", len(batch))
            try:
                if live:
                    self._run(live)
            except Exception as e:  # noqa: BLE001 - one failed request must not stop the server
                for job in live:
                    job.emit("error", f"generation failed: {type(e).__name__}: {first_line(e)}")
                    self._record(job, "failed", len(live))
            with self._cond:
                self._running = 0
                self._cond.notify_all()

    def _finish(self, job: Job, text: str, batch: int) -> None:
        completion_tokens = len(self.tokenizer.encode(text))
        finish = "length" if completion_tokens >= job.sampling.max_tokens else "stop"
        job.emit("done", {"completion_tokens": completion_tokens, "finish_reason": finish})
        self._record(job, "completed", batch)

    def _run(self, jobs: list[Job]) -> None:
        """One left-padded batch (or a lone job), every row streamed as it grows; a job whose client
        leaves drops out of the batch at the next token."""
        s = jobs[0].sampling
        if len(jobs) > 1:
            with self._cond:
                self.stats["batches"] += 1
        texts: list[list[str]] = [[] for _ in jobs]
        for b, piece in self._stream_batch(self.model, self.tokenizer, [j.prompt for j in jobs],
                                           max_new_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                           stop=list(s.stop), seed=s.seed, chat=jobs[0].chat,
                                           keep_going=lambda b: not jobs[b].cancelled.is_set()):
            if not jobs[b].cancelled.is_set():
                texts[b].append(piece)
                jobs[b].pieces += 1
                jobs[b].emit("piece", piece)
        for job, text in zip(jobs, texts):
            if job.cancelled.is_set():
                self._record(job, "cancelled", len(jobs))
            else:
                self._finish(job, "".join(text), len(jobs))
