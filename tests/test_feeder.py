"""DeviceFeeder: batches in order and as float32, loader errors raised in the training thread, clean shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.feeder import DeviceFeeder

CPU = torch.device("cpu")


def half_batches(n: int, log: list[str] | None = None, delay: float = 0.0):
    try:
        for i in range(n):
            time.sleep(delay)
            yield torch.full((2, 3), float(i), dtype=torch.float16)
    finally:
        if log is not None:
            log.append("closed")


def test_batches_arrive_in_order_as_float32_then_stop():
    with DeviceFeeder(half_batches(5), CPU) as feeder:
        out = list(feeder)
        assert [int(b[0, 0]) for b in out] == [0, 1, 2, 3, 4]
        assert all(b.dtype == torch.float32 and b.device == CPU for b in out)
        with pytest.raises(StopIteration):
            next(feeder)


def test_a_loader_error_is_raised_where_the_batch_was_expected():
    def failing():
        yield torch.zeros(1)
        raise UserFacingError("case_003 has NaN in channel 1")

    feeder = DeviceFeeder(failing(), CPU)
    assert next(feeder).shape == (1,)
    with pytest.raises(UserFacingError, match="case_003 has NaN"):
        next(feeder)
    with pytest.raises(StopIteration):
        next(feeder)
    feeder.close()


def test_close_stops_a_blocked_producer_and_closes_the_loader():
    log: list[str] = []
    feeder = DeviceFeeder(half_batches(1000, log), CPU, depth=2)
    next(feeder)
    time.sleep(0.2)  # the producer fills the queue and blocks on it
    feeder.close()
    assert not feeder._thread.is_alive() and log == ["closed"]
    assert not [t for t in threading.enumerate() if t.name == "nnunet-slem-device-feeder"]


def test_wait_time_counts_only_waiting_for_the_loader():
    fast = DeviceFeeder(half_batches(4), CPU)
    time.sleep(0.2)  # the queue is full before the consumer asks
    list(fast)
    slow = DeviceFeeder(half_batches(4, delay=0.1), CPU)
    list(slow)
    assert slow.wait_s > 0.3 > fast.wait_s


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        DeviceFeeder(half_batches(1), CPU, depth=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copies_on_a_side_stream_arrive_intact():
    device = torch.device("cuda")
    expected = [torch.randn(2, 4, 32, 32, 32).half() for _ in range(6)]
    with DeviceFeeder((b.pin_memory() for b in expected), device) as feeder:
        for batch, reference in zip(feeder, expected):
            assert batch.device.type == "cuda" and batch.dtype == torch.float32
            torch.testing.assert_close(batch.cpu(), reference.float())
