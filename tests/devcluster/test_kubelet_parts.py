"""Parts of the local kubelet that are plain data structures: pod IP allocation."""

from __future__ import annotations

from trireme.devcluster.kubelet import _IPPool


def test_pod_ip_released_twice_is_still_handed_out_once() -> None:
    pool = _IPPool("127.1.0.0/29")
    first = pool.take()
    pool.give_back(first)
    pool.give_back(first)  # both ends of a pod's life release it
    taken = [pool.take() for _ in range(4)]
    assert len(set(taken)) == 4 and taken.count(first) == 1
