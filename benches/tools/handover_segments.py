#!/usr/bin/env python3
"""Splits the contended lock hand-overs of a registry benchmark run into their legs.

Capture the loopback traffic of the contended workload, then read the capture with this script:

    tcpdump -i lo -n -w /tmp/handover.pcap udp &
    ENSEMBLE_BENCH_ONLY=contending cargo bench --bench registry
    kill %1
    tcpdump -r /tmp/handover.pcap -n -tt | python3 benches/tools/handover_segments.py

In that workload every hand-over is one chain of datagrams: the client node asks the leader
(the next holder's release), the leader sends the entry to both followers, the first follower
answers, the leader sends the client node the batch with the grant, and the client node's next
request starts the next hand-over. The leader is the port that exchanges the most datagrams;
the client node is the peer that sends it the most large (request) datagrams. For each leg the
script prints the 10th, 25th, 50th, 75th and 90th percentiles, in microseconds, from wire to
wire:

- intake: the client node's request to the leader's first AppendEntries;
- follower: that AppendEntries to the first follower's answer (its fsync included);
- commit: that answer to the leader's batch for the client node;
- client: that batch to the client node's next request;
- cycle: one whole hand-over.
"""

import collections
import sys

# Requests and batches carry commands; acknowledgements and answers to AppendEntries are smaller.
LARGE = 400


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

    legs = {name: [] for name in ("intake", "follower", "commit", "client", "cycle")}
    step, marks = "idle", {}
    for time, source, target, length in datagrams:
        request = source == client and target == leader and length > LARGE
        if step == "idle" and request:
            marks, step = {"asked": time}, "asked"
        elif step == "asked" and source == leader and target != client:
            marks["replicated"], step = time, "replicated"
        elif step == "replicated" and target == leader and source != client:
            marks["acknowledged"], step = time, "acknowledged"
        elif step == "acknowledged" and source == leader and target == client and length > LARGE:
            marks["answered"], step = time, "answered"
        elif step == "answered" and request:
            legs["intake"].append(marks["replicated"] - marks["asked"])
            legs["follower"].append(marks["acknowledged"] - marks["replicated"])
            legs["commit"].append(marks["answered"] - marks["acknowledged"])
            legs["client"].append(time - marks["answered"])
            legs["cycle"].append(time - marks["asked"])
            marks, step = {"asked": time}, "asked"

    count = len(legs["cycle"])
    print(f"leader port {leader}, client node port {client}, {count} hand-overs")
    if count == 0:
        return
    print(f"{'leg':<10} {'p10':>6} {'p25':>6} {'p50':>6} {'p75':>6} {'p90':>6}  (µs)")
    for name, values in legs.items():
        values.sort()
        cells = " ".join(f"{values[count * q // 100]:6.0f}" for q in (10, 25, 50, 75, 90))
        print(f"{name:<10} {cells}")


if __name__ == "__main__":
    main()
