"""The API's JobPublisher: ids wait briefly for a full model batch, never longer than the linger,
and nothing waiting is dropped at shutdown or by a failed send."""

from __future__ import annotations

import threading
import time

from app.api.publisher import JobPublisher


class Sends:
    """Stands in for the broker: what was sent, in order, and when."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.at: list[float] = []
        self.fail_first = fail_first
        self.sent = threading.Event()

    def __call__(self, job_ids: list[str]) -> bool:
        if self.fail_first:
            self.fail_first = False
            raise ConnectionError("broker down")
        self.batches.append(list(job_ids))
        self.at.append(time.monotonic())
        self.sent.set()
        return True


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_ids_from_several_commits_go_out_as_one_full_batch() -> None:
    sends = Sends()
    publisher = JobPublisher(sends, batch_size=8, linger_seconds=5.0)
    try:
        publisher.publish(_ids("a", 3))
        publisher.publish(_ids("b", 2))
        publisher.publish(_ids("c", 4))  # 9 waiting: one full batch now, one id lingers
        assert sends.sent.wait(2.0)
        assert sends.batches == [[*_ids("a", 3), *_ids("b", 2), *_ids("c", 3)]]
    finally:
        publisher.close()
    assert sends.batches[1:] == [["c3"]]  # the lingering id, sent at shutdown


def test_a_lone_id_waits_no_longer_than_the_linger() -> None:
    sends = Sends()
    publisher = JobPublisher(sends, batch_size=8, linger_seconds=0.2)
    try:
        published = time.monotonic()
        publisher.publish(["only"])
        assert sends.sent.wait(2.0)
        waited = sends.at[0] - published
        assert sends.batches == [["only"]]
        assert 0.15 <= waited < 1.0
    finally:
        publisher.close()


def test_a_failed_send_does_not_stop_the_publisher() -> None:
    sends = Sends(fail_first=True)  # the ids of the failed send wait in the database (reconciler)
    publisher = JobPublisher(sends, batch_size=2, linger_seconds=5.0)
    try:
        publisher.publish(["lost", "to-reconciler"])
        publisher.publish(["x", "y"])
        assert sends.sent.wait(2.0)
        assert sends.batches == [["x", "y"]]
    finally:
        publisher.close()
