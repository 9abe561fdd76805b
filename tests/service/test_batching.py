import asyncio
import threading

import numpy as np
import pytest
from servers import until

from service.engine.calls import Batcher
from service.failures import Overloaded


def run(coro):
    return asyncio.run(coro)


def test_concurrent_calls_share_a_batch_and_get_their_own_results():
    sizes = []

    def double(items):
        sizes.append(len(items))
        return [item * 2 for item in items]

    async def main():
        batcher = Batcher(double, max_size=8, max_queue=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.stop()
        return results

    assert run(main()) == [2 * i for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) <= 4


def test_calls_with_different_keys_never_share_a_batch():
    batches = []

    def record(items):
        batches.append([key for key, _ in items])
        return [value for _, value in items]

    async def main():
        batcher = Batcher(record, max_size=100, max_queue=100, key=lambda item: item[0])
        batcher.start()
        items = [("a" if i % 3 else "b", i) for i in range(12)]
        results = await asyncio.gather(*(batcher.submit(item) for item in items))
        await batcher.stop()
        return results

    assert run(main()) == list(range(12))
    assert all(len(set(batch)) == 1 for batch in batches)


def test_sizes_bound_a_batch():
    seen = []

    def total(items):
        seen.append(sum(items))
        return items

    async def main():
        batcher = Batcher(total, max_size=10, max_queue=100, size=lambda item: item)
        batcher.start()
        await asyncio.gather(*(batcher.submit(4) for _ in range(6)))
        await batcher.stop()

    run(main())
    assert max(seen) <= 10 and sum(seen) == 24


def test_a_failing_batch_fails_its_callers_only():
    def maybe_fail(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    async def main():
        batcher = Batcher(maybe_fail, max_size=1, max_queue=10)
        batcher.start()
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit("bad")
        good = await batcher.submit("good")
        await batcher.stop()
        return good

    assert run(main()) == "good"


def test_a_full_queue_is_refused_at_once():
    computing, release = threading.Event(), threading.Event()

    def held(items):
        computing.set()
        assert release.wait(60), "the batch was never released"
        return items

    async def main():
        batcher = Batcher(held, max_size=1, max_queue=2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(0))
        await until(computing.is_set)  # the first call is in the worker, held there
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await until(lambda: batcher.waiting == 2)
        refused = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)  # one turn of the event loop: the refusal waits for nothing
        assert refused.done() and isinstance(refused.exception(), Overloaded)
        assert not running.done()  # the worker is still held: the refusal did not wait for room
        release.set()
        results = await asyncio.gather(running, *queued)
        await batcher.stop()
        return results

    try:
        assert run(main()) == [0, 1, 2]
    finally:
        release.set()


def test_the_event_loop_keeps_running_during_model_work():
    computing, release = threading.Event(), threading.Event()

    def held(items):
        computing.set()
        assert release.wait(60), "the model work was never released"
        return items

    async def main():
        batcher = Batcher(held, max_size=4, max_queue=10)
        batcher.start()
        call = asyncio.ensure_future(batcher.submit(1))
        await until(computing.is_set)  # the model work has begun and waits...
        assert not call.done()
        release.set()  # ...for this code, which runs on the event loop meanwhile, to let it go
        result = await call
        await batcher.stop()
        return result

    try:
        assert run(main()) == 1
    finally:
        release.set()


def test_split_points_undo_concatenation():
    from service.engine.calls import concat_rows

    parts = [np.arange(3), np.arange(5), np.arange(1)]
    joined, bounds = concat_rows(parts, axis=0)
    assert [p.tolist() for p in np.split(joined, bounds)] == [p.tolist() for p in parts]


def test_small_scorer_calls_are_batched_and_large_ones_run_at_once(shipped_model):
    from service.engine.calls import ModelCalls
    from service.engine.runtime import load_model
    from service.settings import Settings

    settings = Settings(model_dir=shipped_model, score_chunk_rows=400)  # calls of 100 passes or more run at once
    model = load_model(settings)
    batched = []
    seen = []

    def on_call(graph, size, in_batch):
        seen.append((graph, size))
        if in_batch:
            batched.append((graph, size))

    calls = ModelCalls(model, settings, on_call=on_call)
    rng = np.random.default_rng(0)
    x = (rng.random((2, 784)) < 0.3).astype(np.float32)
    y = np.array([1, 7])
    small = rng.standard_normal((10, 2, 32)).astype(np.float32)  # 20 decoder passes
    large = rng.standard_normal((60, 2, 32)).astype(np.float32)  # 120 decoder passes

    async def main():
        calls.start()
        try:
            return await calls.score(x, y, small), await calls.score(x, y, large)
        finally:
            await calls.stop()

    got_small, got_large = run(main())
    assert batched == [("scorer", 20)]
    assert seen == [("scorer", 20), ("scorer", 120)]  # every call is counted among the passes computed
    for got, eps in ((got_small, small), (got_large, large)):
        for a, b in zip(got, model.log_weights(x, y, eps), strict=True):
            np.testing.assert_array_equal(a, b)
