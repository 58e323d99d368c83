#!/usr/bin/env python3
"""Splits the contended lock hand-overs of a registry benchmark run into their legs.

Capture the loopback traffic of the contended workload, then read the capture with this script:

    tcpdump -i lo -n -w /tmp/handover.pcap udp &
    ENSEMBLE_BENCH_ONLY=contending cargo bench --bench registry
    kill %1
    tcpdump -r /tmp/handover.pcap -n -tt | python3 benches/tools/handover_segments.py

In that workload every hand-over is one chain of datagrams: the client node asks the leader
(the next holder's release), the leader sends the entry to both followers and, once its own copy
is on disk, to the client node; each follower tells the client node once its copy is on disk; the
client node applies the entry as soon as it holds the leader's copy and a follower's (a majority
of three), which grants the lock, and the next holder's release starts the next hand-over. The
leader is the port that exchanges the most datagrams; the client node is the peer that sends it
the most large (request) datagrams; the followers are the other two. For each leg the script
prints the 10th, 25th, 50th, 75th and 90th percentiles, in microseconds, from wire to wire:

- intake: the client node's request to the leader's first AppendEntries;
- leader: that AppendEntries to the leader's batch for the client node (its own fsync included);
- follower: that AppendEntries to the first follower notice to reach the client node (the
  follower's wake-up, append and fsync included);
- client: the later of the two (the batch and the first notice) to the client node's next
  request;
- cycle: one whole hand-over.

It also says in how many hand-overs the leader's batch came after the first notice, that is,
when the leader's copy, not a follower's, held the client node up.
"""

import collections
import sys

# Requests, AppendEntries and batches carry commands; notices and answers are smaller.
LARGE = 400
# Datagrams that only acknowledge QUIC packets are smaller still.
ACK = 60


def parse(lines):
    """(time in µs, source port, destination port, length) of each UDP datagram."""
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[1] != "IP":
            continue
        try:
            source = fields[2].rsplit(".", 1)[1]
            target = fields[4].rstrip(":").rsplit(".", 1)[1]
            yield float(fields[0]) * 1e6, source, target, int(fields[-1])
        except (IndexError, ValueError):
            continue


def main():
    datagrams = list(parse(sys.stdin))
    if not datagrams:
        sys.exit("no UDP datagrams on stdin: pipe in `tcpdump -r <capture> -n -tt`")
    traffic = collections.Counter()
    for _, source, target, _ in datagrams:
        traffic[source] += 1
        traffic[target] += 1
    leader = traffic.most_common(1)[0][0]
    asks = collections.Counter(
        source for _, source, target, length in datagrams if target == leader and length > LARGE
    )
    if not asks:
        sys.exit(f"no requests to the leader (port {leader}) in the capture")
    client = asks.most_common(1)[0][0]

    followers = {port for _, source, target, _ in datagrams for port in (source, target)}
    followers -= {leader, client}
    legs = {name: [] for name in ("intake", "leader", "follower", "client", "cycle")}
    leader_last = 0
    starts = [
        i
        for i, (_, source, target, length) in enumerate(datagrams)
        if source == client and target == leader and length > LARGE
    ]
    for start, end in zip(starts, starts[1:]):
        asked = datagrams[start][0]
        chain = datagrams[start + 1 : end]
        replicated = {}
        for time, source, target, length in chain:
            if source == leader and target in followers and length > LARGE:
                replicated.setdefault(target, time)
        batch = next(
            (t for t, s, d, n in chain if s == leader and d == client and n > LARGE), None
        )
        notices = []
        for follower, sent in replicated.items():
            notices += [
                t
                for t, s, d, n in chain
                if s == follower and d == client and n > ACK and t > sent
            ][:1]
        if len(replicated) != len(followers) or batch is None or not notices:
            continue
        first = min(replicated.values())
        notice = min(notices)
        applied = max(batch, notice)
        leader_last += batch > notice
        legs["intake"].append(first - asked)
        legs["leader"].append(batch - first)
        legs["follower"].append(notice - first)
        legs["client"].append(datagrams[end][0] - applied)
        legs["cycle"].append(datagrams[end][0] - asked)

    count = len(legs["cycle"])
    print(f"leader port {leader}, client node port {client}, {count} hand-overs")
    if count == 0:
        return
    print(f"the leader's batch came after the first notice in {100 * leader_last / count:.0f} % of them")
    print(f"{'leg':<10} {'p10':>6} {'p25':>6} {'p50':>6} {'p75':>6} {'p90':>6}  (µs)")
    for name, values in legs.items():
        values.sort()
        cells = " ".join(f"{values[count * q // 100]:6.0f}" for q in (10, 25, 50, 75, 90))
        print(f"{name:<10} {cells}")


if __name__ == "__main__":
    main()
