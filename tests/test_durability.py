"""kill -9 the server in the middle of a burst of concurrent creates and updates; after a
restart every acknowledged write is there (at the acknowledged version or later) and
nothing is half-written: every webtask's code, meta and secrets come from one write, its
secrets decrypt, and it runs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import CC_BODY, WtpyServer, cc_meta

WRITERS = 8


def code_for(name: str, write: int) -> str:
    # Sizes vary so that rows move between pages; the constant ties code to its write.
    padding = "#" * (write * 7919 % 30_000)
    return (
        f"WRITE = {write}\n{padding}\n"
        "def hook(client, scope, audience, context):\n"
        "    webtask = context['webtask']\n"
        "    return {'write': WRITE, 'secret': webtask['secrets']['s'], 'meta': webtask['meta']['write']}\n"
    )


def body_for(name: str, write: int) -> dict[str, Any]:
    return {
        "code": code_for(name, write),
        "meta": cc_meta(write=str(write), name=name),
        "secrets": {"s": f"secret-{name}-{write}", "pad": "p" * (write % 900)},
    }


@dataclass
class Ledger:
    """What the server acknowledged: per name, the highest version and the write it came with."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (version, write)
    sent: dict[str, set[int]] = field(default_factory=dict)  # name -> writes sent (acked or not)
    count: int = 0

    def send(self, name: str, write: int) -> None:
        with self.lock:
            self.sent.setdefault(name, set()).add(write)

    def ack(self, name: str, version: int, write: int) -> None:
        with self.lock:
            self.count += 1
            if version > self.acked.get(name, (0, -1))[0]:
                self.acked[name] = (version, write)


def writer(server: WtpyServer, index: int, ledger: Ledger, stop: threading.Event) -> None:
    shared = [f"shared{n}" for n in range(4)]  # contended: several writers update these
    write = index * 1_000_000
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                      timeout=10) as client:  # fmt: skip
        while not stop.is_set():
            write += 1
            name = (
                shared[write % 4] if write % 3 else f"own{index}-{write % 50}"
            )  # creates + updates
            ledger.send(name, write)
            try:
                if write % 5 == 0 and name in ledger.acked:
                    patch = {"code": code_for(name, write), "meta": {"write": str(write)},
                             "secrets": {"s": f"secret-{name}-{write}", "pad": "p" * (write % 900)}}  # fmt: skip
                    response = client.patch(f"/api/webtask/durable/{name}", json=patch)
                else:
                    response = client.put(
                        f"/api/webtask/durable/{name}", json=body_for(name, write)
                    )
            except httpx.HTTPError:
                return  # the server is gone: this write is unacknowledged
            if response.status_code not in (200, 201):
                return
            ledger.ack(name, response.json()["version"], write)


@pytest.mark.parametrize("acks_before_kill", [40, 400])
def test_kill_9_during_a_write_burst_loses_nothing_acknowledged(
    fresh_server: WtpyServer, acks_before_kill: int
) -> None:
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(fresh_server, i, ledger, stop))
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while ledger.count < acks_before_kill and time.monotonic() < deadline:
        time.sleep(0.005)
    fresh_server.kill()  # SIGKILL, with writes in flight
    stop.set()
    for thread in threads:
        thread.join(30)
    assert ledger.count >= acks_before_kill, "the burst did not get going"

    fresh_server.start()
    with fresh_server.client() as admin:
        listed = {w["name"]: w for w in admin.get("/api/webtask/durable").json()}
        assert set(ledger.acked) <= set(listed)  # every acknowledged webtask exists
        for name, summary in listed.items():
            view = admin.get(f"/api/webtask/durable/{name}", params={"decrypt": 1}).json()
            stored = int(view["meta"]["write"])
            # One write, whole: code, meta and secrets all carry the same write number.
            assert stored in ledger.sent[name], (name, stored)
            assert view["code"] == code_for(name, stored)
            assert view["secrets"] == {"s": f"secret-{name}-{stored}", "pad": "p" * (stored % 900)}
            assert view["meta"] == cc_meta(write=str(stored), name=name)
            assert view["version"] == summary["version"]
            if name in ledger.acked:
                version, write = ledger.acked[name]
                assert view["version"] >= version, (name, view["version"], version)
                if view["version"] == version:
                    assert stored == write
            # And it decrypts and runs.
            envelope = fresh_server.run(name, CC_BODY, container="durable").json()
            assert envelope["status"] == "success", envelope
            assert envelope["data"] == {
                "write": stored,
                "secret": f"secret-{name}-{stored}",
                "meta": str(stored),
            }
        # The server takes writes again after the restart.
        again = admin.put("/api/webtask/durable/shared0", json=body_for("shared0", 7))
        before = listed.get("shared0", {"version": 0})["version"]
        assert again.status_code in (200, 201) and again.json()["version"] == before + 1
