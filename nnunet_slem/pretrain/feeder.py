"""Batches moved to the training device one step ahead, by a background thread.

Why: the training step waits for the GPU once per step (the AMP gradient scaler reads back its inf/NaN check
before stepping). Whatever the training thread does between that wait and the next step's first kernel leaves
the GPU idle: taking the batch from the loader (inter-process queue, pinned-memory hand-off), queueing its
host-to-device copy and the cast to float32. Here a thread does that while the GPU still runs the previous
step, copying on its own CUDA stream, and the training thread only picks up a tensor that is (or is about to
be) on the device. Order is kept (one producer, a FIFO queue), so runs stay reproducible and resumable.

On the CPU the thread still overlaps patch loading (``num_workers=0``) with the step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import torch

_END = object()


class DeviceFeeder:
    """Iterate float32 batches on ``device`` from ``batches`` (CPU tensors), ``depth`` of them in flight.

    A loader error is re-raised by :meth:`__next__` as it was raised. :attr:`wait_s` accumulates the time the
    training thread spent waiting for a batch: near zero when the device is the bottleneck, the loader's
    shortfall otherwise. Call :meth:`close` (or use as a context manager) to stop the thread and the loader.
    """

    def __init__(self, batches: Iterator[torch.Tensor], device: torch.device, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if device.type == "cuda" and device.index is None:  # the thread must name it: set_device needs an index
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.wait_s = 0.0
        self._batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._thread = threading.Thread(target=self._produce, name="nnunet-slem-device-feeder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ feeder thread
    def _produce(self) -> None:
        try:
            if self._stream is not None:
                torch.cuda.set_device(self.device)  # the current device is per thread
            for batch in self._batches:
                if not self._put(self._to_device(batch)):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the training thread, which raises it
            self._put(error)
        finally:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()  # a generator over a DataLoader: shuts its worker processes down

    def _to_device(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if self._stream is None:
            return batch.to(self.device).float(), None
        with torch.cuda.stream(self._stream):
            tensor = batch.to(self.device, non_blocking=True).float()
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return tensor, ready

    def _put(self, item: object) -> bool:
        """Wait for room in the queue unless :meth:`close` was called; False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # ---------------------------------------------------------------------------------- training thread
    def __iter__(self) -> DeviceFeeder:
        return self

    def __next__(self) -> torch.Tensor:
        if self._finished:
            raise StopIteration
        start = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - start
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        tensor, ready = item
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)  # the device waits for the copy, the host does not
            tensor.record_stream(current)  # its memory is not reused before this stream is done with it
        return tensor

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the batch it is loading, if any) and with it the loader."""
        self._stop.set()
        while True:  # free a producer blocked on a full queue, and the batches held there
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        self._finished = True

    def __enter__(self) -> DeviceFeeder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
