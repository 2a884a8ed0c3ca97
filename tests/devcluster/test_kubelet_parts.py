"""Parts of the local kubelet that need no cluster: pod IP allocation, and the pod range a kubelet holds."""

from __future__ import annotations

import socket

from trireme.devcluster.kubelet import _IPPool, reserve_pod_range


def test_pod_ip_released_twice_is_still_handed_out_once() -> None:
    pool = _IPPool("127.1.0.0/29")
    first = pool.take()
    pool.give_back(first)
    pool.give_back(first)  # both ends of a pod's life release it
    taken = [pool.take() for _ in range(4)]
    assert len(set(taken)) == 4 and taken.count(first) == 1


def test_a_pod_range_is_held_by_one_cluster_at_a_time() -> None:
    first, held = reserve_pod_range("127.200.0.0/16")
    try:
        second, also_held = reserve_pod_range("127.200.0.0/16")  # a second cluster on this machine
        also_held.close()
    finally:
        held.close()
    assert first == "127.200.0.0/16" and second != first
    again, freed = reserve_pod_range("127.200.0.0/16")  # given back when the first cluster stops
    freed.close()
    assert again == first


def test_a_range_with_servers_on_tritons_ports_is_passed_over() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.201.0.3", 8001))
        listener.listen()
        cidr, held = reserve_pod_range("127.201.0.0/16")
        held.close()
    assert cidr != "127.201.0.0/16"
