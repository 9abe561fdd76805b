"""Fair share between callers: a freed place goes to the caller holding fewest requests, a caller past
its share or rate gets 429 with Retry-After (counted by key in /metrics), and a request that leaves
while it waits never runs."""

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import wait_ready

from service.admission import CALLER, Admission, CallerLimited
from service.app import create_app
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
        await asyncio.sleep(0.01)  # heavy 0 runs, heavy 1-5 wait
        light = [asyncio.create_task(_as("light", admission, job(f"light {i}", gate))) for i in range(2)]
        await asyncio.sleep(0.01)
        assert admission.running == 1 and admission.in_flight == 8
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
        await asyncio.sleep(0.01)
        tasks = []
        for name in ("b0", "a0", "a1", "b1"):  # b waits first; each holds 2
            tasks.append(asyncio.create_task(_as(name[0], admission, job(name))))
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        blocker.set()
        await asyncio.gather(first, *tasks)

    asyncio.run(main())
    # b0 first (a tie at 2 each: b waited longest); then b holds 1 and a 2, so b1 runs before a's
    assert order == ["b0", "b1", "a0", "a1"]


def _after_one_gave_up(gave_up: bool, wait_before_new: float) -> list[str]:
    """Order of runs of one caller's requests: one running, one (`old`) waiting `wait_before_new` seconds
    before two newer come, and, when `gave_up`, one more that left while it waited; fifo_after is 0.2 s."""
    order = []

    async def job(name: str):
        order.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1, fifo_after=0.2)
        blocker = asyncio.Event()
        first = asyncio.create_task(_as("a", admission, blocker.wait()))
        await asyncio.sleep(0.01)
        if gave_up:
            left = asyncio.create_task(_as("a", admission, job("left")))
            await asyncio.sleep(0.01)
            left.cancel()
        old = asyncio.create_task(_as("a", admission, job("old")))
        await asyncio.sleep(wait_before_new)
        new = [asyncio.create_task(_as("a", admission, job(f"new {i}"))) for i in range(2)]
        await asyncio.sleep(0.01)
        blocker.set()
        await asyncio.gather(first, old, *new)

    asyncio.run(main())
    return order


def test_while_clients_give_up_the_newest_waiting_runs_first_unless_one_waited_past_fifo_after():
    assert _after_one_gave_up(False, 0.01) == ["old", "new 0", "new 1"]  # nobody gave up: in order
    assert _after_one_gave_up(True, 0.01) == ["new 1", "new 0", "old"]
    assert _after_one_gave_up(True, 0.15)[0] == "new 1"
    assert _after_one_gave_up(True, 0.3) == ["old", "new 0", "new 1"]  # the one who gave up did so 0.3 s ago


def test_a_request_cancelled_while_it_waits_never_runs_and_frees_its_place():
    ran = []

    async def job(name):
        ran.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1)
        gate = asyncio.Event()
        running = asyncio.create_task(_as("a", admission, gate.wait()))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(_as("b", admission, job("left")))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.sleep(0.01)
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
        await asyncio.sleep(0.01)
        leaving = asyncio.create_task(_as("a", admission, job("left")))
        staying = asyncio.create_task(_as("a", admission, job("stayed")))
        await asyncio.sleep(0.01)
        gate.set()  # the running one ends before the leaving one's handler runs
        leaving.cancel()
        await asyncio.gather(running, staying)
        assert admission.running == 0 and admission.in_flight == 0

    asyncio.run(main())
    assert ran == ["stayed"]


def test_a_place_is_given_up_only_once_the_thread_of_a_cancelled_call_has_ended():
    import time

    from service.admission import RequestTimeout
    from service.calls import in_thread

    computing = []  # how many model calls compute at once, seen by each

    def model_call():
        computing.append(len(computing) + 1)
        time.sleep(0.3)
        computing.append(-1)

    async def main():
        admission = Admission(max_in_flight=10, timeout=0.2, max_running=1)
        first = asyncio.create_task(admission.run(in_thread(model_call)))
        await asyncio.sleep(0.15)  # the second waits when the first times out (0.2 s), its thread running on
        second = asyncio.create_task(admission.run(in_thread(model_call)))
        return await asyncio.gather(first, second, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, RequestTimeout) for o in outcomes)
    assert computing.count(-1) == 2  # the second ran too, on the place the first gave up
    # each timed out, but the second started only after the first's thread ended: never two at once
    running = 0
    for step in computing:
        running = running + 1 if step > 0 else running - 1
        assert running <= 1


def test_a_place_handed_over_as_its_request_is_cancelled_goes_by_the_counts_without_it():
    ran = []

    async def job(name):
        ran.append(name)

    async def main():
        admission = Admission(max_in_flight=10, timeout=10, max_running=1)
        gate = asyncio.Event()
        first = asyncio.create_task(_as("a", admission, gate.wait()))
        await asyncio.sleep(0.01)
        b1 = asyncio.create_task(_as("b", admission, job("b1")))
        b2 = asyncio.create_task(_as("b", admission, job("b2")))
        await asyncio.sleep(0.01)
        a2 = asyncio.create_task(_as("a", admission, job("a2")))
        a3 = asyncio.create_task(_as("a", admission, job("a3")))
        await asyncio.sleep(0.01)
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
        await asyncio.sleep(0.01)
        with pytest.raises(CallerLimited) as share:
            await _as("a", admission, gate.wait())
        other = asyncio.create_task(_as("b", admission, gate.wait()))  # another caller still gets in
        await asyncio.sleep(0.01)
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
    """Measured more fully by bench.overload; here only the order: a light request sent behind 24 heavy
    ones is answered before most of them."""
    settings = Settings(model_dir=shipped_model, api_keys="heavy,light", max_running=2)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        done = []

        async def fire():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:

                async def send(key, label):
                    body = {"images": [[0.0] * 784], "num_samples": 200, "adaptive": False}
                    answer = await http.post("/v1/classify", json=body, headers={"X-API-Key": key})
                    done.append((label, answer.status_code))

                heavy = [asyncio.create_task(send("heavy", "heavy")) for _ in range(24)]
                await asyncio.sleep(0.2)
                await send("light", "light")
                await asyncio.gather(*heavy)

        client.portal.call(fire)
        assert {status for _, status in done} == {200}
        assert [label for label, _ in done].index("light") < 12
