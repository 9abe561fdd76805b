"""Fair share between callers: a freed place goes to the caller holding fewest requests, a caller past
its share or rate gets 429 with Retry-After (counted by key in /metrics), and a request that leaves
while it waits never runs. Each test forces the order of events it checks: work waits on events the
test sets, the test waits for admission's counts to reach a state, and fifo_after's windows count on
a clock the test moves."""

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import held_calls, until, wait_ready

from service.app import create_app
from service.engine.calls import in_thread
from service.failures import CallerLimited, RequestTimeout
from service.operations.admission import CALLER, Admission
from service.settings import Settings


async def _as(caller: str, admission: Admission, work):
    CALLER.set(caller)  # each task runs in a copy of the context: this sets its own caller
    return await admission.run(work)


def test_a_freed_place_goes_to_the_caller_holding_fewest():
    order = []

    async def job(name: str, gate: asyncio.Event):
        await gate.wait()
        order.append(name)

    async def main():
        admission = Admission(max_in_flight=100, timeout=10, max_running=1)
        gate = asyncio.Event()
        heavy = [asyncio.create_task(_as("heavy", admission, job(f"heavy {i}", gate))) for i in range(6)]
        await until(lambda: admission.in_flight == 6)  # heavy 0 runs, heavy 1-5 wait
        light = [asyncio.create_task(_as("light", admission, job(f"light {i}", gate))) for i in range(2)]
        await until(lambda: admission.in_flight == 8)
        assert admission.running == 1 and not order
        gate.set()
        await asyncio.gather(*heavy, *light)

    asyncio.run(main())
    # light holds 2 and heavy 5 when heavy 0 ends: light's run first, then heavy's in the order they came
    assert order == ["heavy 0", "light 0", "light 1", "heavy 1", "heavy 2", "heavy 3", "heavy 4", "heavy 5"]


def test_between_callers_holding_as_many_the_longest_waiting_goes_first():
    order = []

    async def job(name: str):
        await asyncio.sleep(0)
        order.append(name)

    async def main():
        admission = Admission(max_in_flight=100, timeout=10, max_running=1)
        blocker = asyncio.Event()
        first = asyncio.create_task(_as("c", admission, blocker.wait()))
        await until(lambda: admission.in_flight == 1)
        tasks = []
        for name in ("b0", "a0", "a1", "b1"):  # b waits first; each holds 2
            tasks.append(asyncio.create_task(_as(name[0], admission, job(name))))
            await until(lambda: admission.in_flight == len(tasks) + 1)
        blocker.set()
        await asyncio.gather(first, *tasks)

    asyncio.run(main())
    # b0 first (a tie at 2 each: b waited longest); then b holds 1 and a 2, so b1 runs before a's
    assert order == ["b0", "b1", "a0", "a1"]


def _order_of_runs(sent: list[tuple[float, str]], released_at: float) -> list[str]:
    """The order in which one caller's waiting requests run once its running one ends at `released_at`;
    each of `sent` is a request sent at that time, of that name; one named "left" leaves as soon as it
    waits. fifo_after is 2 s, on a clock the test moves (0 when the running one starts)."""
    order, now = [], 0.0

    async def job(name: str):
        order.append(name)

    async def main():
        nonlocal now
        admission = Admission(max_in_flight=10, timeout=10, max_running=1, fifo_after=2.0, clock=lambda: now)
        blocker = asyncio.Event()
        first = asyncio.create_task(_as("a", admission, blocker.wait()))
        await until(lambda: admission.in_flight == 1)
        waiting = []
        for at, name in sent:
            now = at
            task = asyncio.create_task(_as("a", admission, job(name)))
            await until(lambda: admission.in_flight == len(waiting) + 2)
            if name == "left":
                task.cancel()
                await until(task.done)
            else:
                waiting.append(task)
        now = released_at
        blocker.set()
        await asyncio.gather(first, *waiting)

    asyncio.run(main())
    return order


def test_while_clients_give_up_the_newest_waiting_runs_first_unless_one_waited_past_fifo_after():
    new = [(1.0, "new 0"), (1.0, "new 1")]
    assert _order_of_runs([(0.0, "old"), *new], released_at=1.5) == ["old", "new 0", "new 1"]  # none gave up
    gave_up = [(0.0, "left"), (0.0, "old"), *new]
    assert _order_of_runs(gave_up, released_at=1.5) == ["new 1", "new 0", "old"]
    assert _order_of_runs(gave_up, released_at=1.99) == ["new 1", "new 0", "old"]
    # the one who gave up did so 2.5 s ago: in order again
    later = [(0.0, "left"), (1.5, "old"), (2.0, "new 0"), (2.0, "new 1")]
    assert _order_of_runs(later, released_at=2.5) == ["old", "new 0", "new 1"]
    # one gave up 0.5 s ago, but old has waited 2.5 s: old first, then the newest of those left
    waited = [(0.0, "old"), (2.0, "left"), (2.0, "new 0"), (2.0, "new 1")]
    assert _order_of_runs(waited, released_at=2.5) == ["old", "new 1", "new 0"]


def test_a_request_cancelled_while_it_waits_never_runs_and_frees_its_place():
    ran = []

    async def job(name):
        ran.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1)
        gate = asyncio.Event()
        running = asyncio.create_task(_as("a", admission, gate.wait()))
        await until(lambda: admission.in_flight == 1)
        waiting = asyncio.create_task(_as("b", admission, job("left")))
        await until(lambda: admission.in_flight == 2)
        waiting.cancel()
        await until(lambda: admission.in_flight == 1)
        gate.set()
        await running
        assert await _as("c", admission, job("later")) is None
        assert admission.running == 0 and admission.in_flight == 0

    asyncio.run(main())
    assert ran == ["later"]


def test_a_place_freed_as_its_next_request_is_cancelled_goes_on_to_the_one_after():
    ran = []

    async def job(name):
        ran.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1)
        gate = asyncio.Event()
        running = asyncio.create_task(_as("a", admission, gate.wait()))
        await until(lambda: admission.in_flight == 1)
        leaving = asyncio.create_task(_as("a", admission, job("left")))
        staying = asyncio.create_task(_as("a", admission, job("stayed")))
        await until(lambda: admission.in_flight == 3)
        gate.set()  # the running one ends before the leaving one's handler runs
        leaving.cancel()
        await asyncio.gather(running, staying)
        assert admission.running == 0 and admission.in_flight == 0

    asyncio.run(main())
    assert ran == ["stayed"]


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_a_place_is_given_up_only_once_the_thread_of_a_cancelled_call_has_ended(how):
    entered = {"first": threading.Event(), "second": threading.Event()}
    release = threading.Event()  # holds the model calls
    computing = []  # each call's start and end, in the order they happened

    def model_call(name: str) -> str:
        computing.append(f"{name} starts")
        entered[name].set()
        assert release.wait(60), "the model calls were never released"
        computing.append(f"{name} ends")
        return name

    async def main():
        # the first's deadline near, so that it passes while its thread is held; the second's far
        admission = Admission(max_in_flight=10, timeout=0.1 if how == "timed out" else 60, max_running=1)
        first = asyncio.create_task(admission.run(in_thread(model_call, "first")))
        await until(entered["first"].is_set)
        admission.timeout = 60
        second = asyncio.create_task(admission.run(in_thread(model_call, "second")))
        await until(lambda: admission.in_flight == 2)
        if how == "cancelled":
            first.cancel()  # as the service does when the client leaves
        await until(lambda: first.cancelling() or first.done())  # cancelled, or its deadline passed
        for _ in range(20):  # what a cancellation sets off on the event loop has happened by now
            await asyncio.sleep(0)
        assert not first.done() and admission.running == 1 and admission.in_flight == 2
        assert computing == ["first starts"]  # the second still waits for the place
        release.set()
        return await asyncio.gather(first, second, return_exceptions=True)

    try:
        first, second = asyncio.run(main())
    finally:
        release.set()
    assert isinstance(first, RequestTimeout if how == "timed out" else asyncio.CancelledError)
    assert second == "second"  # it ran on the place the first gave up, once the first's thread had ended
    assert computing == ["first starts", "first ends", "second starts", "second ends"]


def test_a_place_handed_over_as_its_request_is_cancelled_goes_by_the_counts_without_it():
    ran = []

    async def job(name):
        ran.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1)
        gate = asyncio.Event()
        first = asyncio.create_task(_as("a", admission, gate.wait()))
        await until(lambda: admission.in_flight == 1)
        b1 = asyncio.create_task(_as("b", admission, job("b1")))
        b2 = asyncio.create_task(_as("b", admission, job("b2")))
        await until(lambda: admission.in_flight == 3)
        a2 = asyncio.create_task(_as("a", admission, job("a2")))
        a3 = asyncio.create_task(_as("a", admission, job("a3")))
        await until(lambda: admission.in_flight == 5)
        gate.set()
        await asyncio.sleep(0)  # the first ends, and its place goes to b1 (a and b each held 2)...
        assert first.done() and not ran
        b1.cancel()  # ...which leaves before it runs: b then holds 1, a 2
        await asyncio.gather(b2, a2, a3)

    asyncio.run(main())
    assert ran[0] == "b2"


def test_past_its_share_or_rate_a_caller_gets_429_and_others_do_not():
    async def main():
        admission = Admission(max_in_flight=4, timeout=10, caller_share=0.5, caller_rate="2/minute")
        gate = asyncio.Event()
        held = [asyncio.create_task(_as("a", admission, gate.wait())) for _ in range(2)]
        await until(lambda: admission.in_flight == 2)
        with pytest.raises(CallerLimited) as share:
            await _as("a", admission, gate.wait())
        other = asyncio.create_task(_as("b", admission, gate.wait()))  # another caller still gets in
        await until(lambda: admission.in_flight == 3)
        gate.set()
        await asyncio.gather(*held, other)
        with pytest.raises(CallerLimited) as rate:  # "a" ran 2 this minute (a refusal is not counted)
            await _as("a", admission, asyncio.sleep(0))
        return share.value, rate.value

    share, rate = asyncio.run(main())
    assert share.reason == "share" and "CVAE_CALLER_SHARE" in str(share) and share.retry_after == 1
    assert rate.reason == "rate" and "CVAE_CALLER_RATE" in str(rate) and 1 <= rate.retry_after <= 60


def test_the_429_names_the_setting_carries_retry_after_and_is_counted_by_key(shipped_model):
    settings = Settings(model_dir=shipped_model, api_keys="alpha-secret,beta-secret", caller_rate="2/minute")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        body = {"images": [[0.0] * 784], "num_samples": 10}
        first = {"Authorization": "Bearer alpha-secret"}
        statuses = [client.post("/v1/classify", json=body, headers=first).status_code for _ in range(3)]
        refused = client.post("/v1/classify", json=body, headers=first)
        assert statuses == [200, 200, 429] and refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "CVAE_CALLER_RATE" in refused.json()["error"] and refused.json()["problems"][0]["field"]
        assert client.post("/v1/classify", json=body, headers={"X-API-Key": "beta-secret"}).status_code == 200
        metrics = client.get("/metrics", headers=first).text
        assert 'cvae_caller_refused_total{caller="key-1",reason="rate"} 2.0' in metrics
        assert "secret" not in metrics  # keys are never labels
        v2 = client.post(
            "/v2/models/decoder/infer",
            headers=first,
            json={
                "inputs": [
                    {"name": "z", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32},
                    {"name": "y", "shape": [1, 10], "datatype": "FP32", "data": [1.0] + [0.0] * 9},
                ]
            },
        )
        assert v2.status_code == 429  # /v2 counts against the same rate


def test_a_bad_rate_is_refused_at_start_naming_the_form():
    with pytest.raises(ValueError, match="100/second"):
        Settings(caller_rate="lots")


def test_the_light_caller_is_not_slowed_by_a_heavy_one(shipped_model):
    """A light request sent behind 24 heavy ones, all waiting, is the next to run (bench.overload measures
    the latencies). The scorer's calls are held until every request is queued, and one request runs at a
    time, so that the order of the scorer's calls is the order of admission."""
    # unbatched, each call runs in its request's own thread, which carries its caller
    settings = Settings(model_dir=shipped_model, api_keys="heavy,light", max_running=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        client.app.state.repository.resolve().inference.calls.batching = False
        admission = client.app.state.admission
        answers = []

        async def send(http, key):
            body = {"images": [[0.0] * 784], "num_samples": 200, "adaptive": False}  # one scorer call
            answers.append((await http.post("/v1/classify", json=body, headers={"X-API-Key": key})).status_code)

        with held_calls(client.app) as (release, callers):

            async def fire():
                transport = httpx.ASGITransport(app=client.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as http:
                    heavy = [asyncio.create_task(send(http, "heavy")) for _ in range(24)]
                    await until(lambda: admission.in_flight == 24 and callers)  # the first runs, held; 23 wait
                    light = asyncio.create_task(send(http, "light"))
                    await until(lambda: admission.in_flight == 25)
                    assert admission.running == 1 and callers == ["key-1"]
                    release.set()
                    await asyncio.gather(*heavy, light)

            client.portal.call(fire)
        assert answers == [200] * 25
        # the place the first heavy request frees goes to the light caller (it holds 1, the heavy one 23)
        assert callers == ["key-1", "key-2"] + ["key-1"] * 23
