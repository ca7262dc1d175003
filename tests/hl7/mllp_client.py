#!/usr/bin/env python3
"""HL7 MLLP sender for priorfetch's tests, built on third-party clients: python-hl7's
MLLPClient sends and reads the ACK; hl7apy parses the ACKs of `send` (a malformed ACK
fails there), python-hl7's parser those of `flood`.

  mllp_client.py send HOST PORT FILE
      FILE holds messages separated by a line with only '---'; prints one JSON line per
      ACK: {"msa1", "msa2", "err", "msh9", "msh3".."msh6"}.
  mllp_client.py flood HOST PORT --connections N --count M --prefix P [--deadline S]
      N threads share M ORM^O01 messages (control ids P-0 .. P-(M-1)); a message is resent
      until it is ACKed AA (a closed connection or an AR is retried on a new connection).
      Prints {"acked", "resent", "ar", "failed", "bad_ack", "seconds"}. Bounded by --deadline.
"""
import json
import socket
import sys
import threading
import time

import hl7.client
from hl7apy.parser import parse_message


def ack_fields(raw):
    # MLLPClient returns the frame as received; hl7apy wants the bare message.
    ack = parse_message(raw.strip("\x0b\x1c\r\n").replace("\n", "\r"), find_groups=False)
    fields = {
        "msa1": ack.msa.msa_1.value,
        "msa2": ack.msa.msa_2.value,
        "msh9": ack.msh.msh_9.to_er7(),
        "msh3": ack.msh.msh_3.to_er7(),
        "msh4": ack.msh.msh_4.to_er7(),
        "msh5": ack.msh.msh_5.to_er7(),
        "msh6": ack.msh.msh_6.to_er7(),
        "msh12": ack.msh.msh_12.to_er7(),
        "err": None,
    }
    errs = [s for s in ack.children if s.name == "ERR"]
    if errs:
        fields["err"] = errs[0].to_er7()
    return fields


def msa1_of(raw):
    """MSA-1 by python-hl7's parser (hl7apy takes ~9 ms per ACK: too slow for a flood)."""
    message = hl7.parse(raw.strip("\x0b\x1c\r\n").replace("\n", "\r"))
    return str(message.segment("MSA")[1])


def send(host, port, path):
    with open(path, encoding="utf-8") as f:
        messages = [m.strip("\n").replace("\n", "\r") for m in f.read().split("\n---\n") if m.strip()]
    with hl7.client.MLLPClient(host, int(port)) as client:
        for message in messages:
            raw = client.send_message(message)
            print(json.dumps(ack_fields(raw.decode() if isinstance(raw, bytes) else raw)), flush=True)


def orm(control_id, n):
    return "\r".join([
        f"MSH|^~\\&|FLOOD|HOSP|PRIORFETCH|RAD|20261205083000||ORM^O01^ORM_O01|{control_id}|P|2.5.1",
        f"PID|1||MRN{n}^^^HOSP^MR||DOE^JANE||19700101|F",
        f"ORC|NW|ORD{n}|ACC{control_id}",
        "TQ1|1||||||20261206093000+0100",
        f"OBR|1|ORD{n}|ACC{control_id}|CTCHEST^CT chest" + "|" * 20 + "CT",
    ]) + "\r"


class Flood:
    def __init__(self, host, port, count, prefix, deadline):
        self.host, self.port, self.prefix = host, int(port), prefix
        self.next = 0
        self.count = count
        self.deadline = time.monotonic() + deadline
        self.lock = threading.Lock()
        self.stats = {"acked": 0, "resent": 0, "ar": 0, "failed": 0, "bad_ack": 0}

    def take(self):
        with self.lock:
            if self.next >= self.count:
                return None
            self.next += 1
            return self.next - 1

    def count_up(self, key):
        with self.lock:
            self.stats[key] += 1

    def worker(self):
        client = None
        n = self.take()
        while n is not None and time.monotonic() < self.deadline:
            try:
                if client is None:
                    client = hl7.client.MLLPClient(self.host, self.port)
                    client.socket.settimeout(30)
                raw = client.send_message(orm(f"{self.prefix}-{n}", n))
                raw = raw.decode() if isinstance(raw, bytes) else raw
            except (OSError, socket.timeout, ValueError):
                raw = ""
            msa1 = None
            if raw.strip("\x0b\x1c\r\n"):
                try:
                    msa1 = msa1_of(raw)
                except Exception:  # a cut connection can leave part of an ACK
                    self.count_up("bad_ack")
            if msa1 == "AA":
                self.count_up("acked")
                n = self.take()
                continue
            if msa1 == "AE":
                self.count_up("failed")
                n = self.take()
                continue
            # AR or no ACK: resend on a fresh connection after a pause.
            self.count_up("ar" if msa1 == "AR" else "resent")
            if client is not None:
                try:
                    client.close()
                except OSError:
                    pass
                client = None
            time.sleep(0.2)
        if client is not None:
            client.close()


def flood(host, port, args):
    opts = dict(zip(args[::2], args[1::2]))
    job = Flood(host, port, int(opts["--count"]), opts["--prefix"], float(opts.get("--deadline", "300")))
    started = time.monotonic()
    threads = [threading.Thread(target=job.worker) for _ in range(int(opts["--connections"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job.stats["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(job.stats), flush=True)


if __name__ == "__main__":
    mode, host, port = sys.argv[1:4]
    if mode == "send":
        send(host, port, sys.argv[4])
    elif mode == "flood":
        flood(host, port, sys.argv[4:])
    else:
        sys.exit(f"unknown mode {mode}")
