#!/usr/bin/env python3
"""An example delivery worker for Codegate's delivery API, over gRPC, from stubs
generated out of proto/ (generate.sh).

    generate.sh OUT && PYTHONPATH=OUT CODEGATE_ADMIN_TOKEN=... python3 delivery_worker.py --channel sms

It claims the messages of its channels (DeliveryService.Claim, under a lease),
"delivers" each one by appending it as a JSON line to --deliver-to (stdout when
not given): put your SMS gateway, push service or mail relay in deliver(). Then
it acks the delivered messages (Codegate marks them sent and wipes their
bodies) and fails the others (Codegate retries them with backoff, and abandons
them after its retry limit).

Delivery is at least once: a worker that dies after delivering but before its
ack sees the message again, with the same id, once the lease has lapsed. So
this one keeps the ids it delivered (read back from --deliver-to when it
starts) and acks a message it already delivered without delivering it twice.
A real worker keeps them where its provider's de-duplication needs them (or
hands the id to a provider that de-duplicates itself).

Options:
    --channel sms|mail-api   the channels to claim (repeatable; default sms)
    --deliver-to FILE        append delivered messages here as JSON lines
    --batch N, --lease S     messages per claim (default 10), lease in seconds (default 60)
    --wait S                 how long a claim waits for a message when none is due, answered
                             as soon as one is queued (a long poll; default 20, cut by the
                             server to end within its RPC_TIMEOUT; 0 polls every --poll S)
    --poll S                 seconds between claims after a failed one, or while none is
                             due with --wait 0 (default 1)
    --until-idle             exit once a claim finds nothing due (else run until SIGTERM or SIGINT)
    --refuse PREFIX          fail recipients that start with PREFIX (a provider's refusal, for trying it out)
    --exit-before-ack        deliver one batch, then exit without acking (a crash, for trying it out)

The server is $CODEGATE_SERVER (host:port, default localhost:8080), --tls for
TLS; its token is $CODEGATE_ADMIN_TOKEN (a delivery token, made by `codegate
admin-token create --delivery`), never a command-line argument.
Progress goes to stderr, one line per event; errors exit with status 1.
"""

import argparse
import base64
import json
import os
import signal
import sys
import time

import grpc
from google.protobuf import duration_pb2

from codegate.v1 import delivery_pb2, delivery_pb2_grpc, types_pb2

CHANNELS = {"sms": types_pb2.DELIVERY_CHANNEL_SMS, "mail-api": types_pb2.DELIVERY_CHANNEL_MAIL_API}
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


class Outbox:
    """Where this example delivers: JSON lines in a file, or stdout; and the ids it delivered."""

    def __init__(self, path):
        self.path = path
        self.delivered = set()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.delivered = {json.loads(line)["id"] for line in f if line.strip()}

    def deliver(self, m):
        record = {
            "id": m.id,
            "org_id": m.org_id,
            "channel": types_pb2.DeliveryChannel.Name(m.channel),
            "purpose": types_pb2.CodePurpose.Name(m.purpose),
            "recipient": m.recipient,
            "attempt": m.attempt,
        }
        if m.WhichOneof("content") == "text":
            record["text"] = m.text.body  # the code only: an SMS gateway sends it as it is
        else:
            record["from"] = getattr(m.mail, "from")  # a keyword in Python
            record["rfc822"] = base64.b64encode(m.mail.rfc822).decode("ascii")  # a relay sends these bytes as they are
        line = json.dumps(record) + "\n"
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
        self.delivered.add(m.id)


def receipt(m):
    return delivery_pb2.DeliveryReceipt(id=m.id, org_id=m.org_id, lease_token=m.lease_token)


def run(args):
    token = os.environ.get("CODEGATE_ADMIN_TOKEN")
    if not token:
        raise SystemExit("error: set CODEGATE_ADMIN_TOKEN to a delivery token (codegate admin-token create --delivery)")
    metadata = (("authorization", "Bearer " + token),)
    outbox = Outbox(args.deliver_to)
    stopping = []
    waiting = []  # the claim in flight: a stop cancels it rather than let it wait out its wait

    def stop(*_):
        stopping.append(True)
        for claim_call in waiting:
            claim_call.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)

    ch = grpc.secure_channel(args.server, grpc.ssl_channel_credentials()) if args.tls else grpc.insecure_channel(args.server)
    with ch:
        stub = delivery_pb2_grpc.DeliveryServiceStub(ch)
        # A worker that runs on waits in its claims while none is due; one that stops when idle does not.
        wait = 0 if args.until_idle else args.wait
        claim = delivery_pb2.ClaimRequest(
            channels=[CHANNELS[c] for c in (args.channel or ["sms"])],
            max_messages=args.batch,
            lease=duration_pb2.Duration(seconds=args.lease),
            wait=duration_pb2.Duration(seconds=wait),
        )
        while not stopping:
            asked = time.monotonic()
            claim_call = stub.Claim.future(claim, metadata=metadata, timeout=args.timeout + wait)
            waiting[:] = [claim_call]
            if stopping:  # stopped between the loop's check and the line above
                claim_call.cancel()
            try:
                messages = claim_call.result().messages
            except grpc.FutureCancelledError:
                break  # stopped while it waited
            except grpc.RpcError as err:
                # A server restarting or out of reach: claim again in a moment (what was
                # claimed and not acked comes back when its lease ends). Anything else ends the worker.
                if args.until_idle or err.code() not in TRANSIENT:
                    raise
                log(f"claim failed: {err.code().name}; trying again")
                time.sleep(args.poll)
                continue
            if not messages:
                if args.until_idle:
                    log("idle")
                    return
                # An empty answer that did not wait (a server before `wait`, or one that cut it short):
                # a pause, not a tight loop of claims.
                if not wait or time.monotonic() - asked < 1:
                    time.sleep(args.poll)
                continue
            log(f"claimed {len(messages)}")
            done, failed = [], []
            for m in messages:
                if m.id in outbox.delivered:
                    # Delivered before, its ack lost: the same id, so not delivered again.
                    log(f"already delivered {m.id}")
                    done.append(receipt(m))
                elif any(m.recipient.startswith(p) for p in args.refuse or []):
                    failed.append(delivery_pb2.DeliveryFailure(message=receipt(m), error="refused by the provider (simulated)"))
                elif any(m.recipient.startswith(p) for p in args.unknown or []):
                    # Retrying cannot help: the message is abandoned at once.
                    failed.append(delivery_pb2.DeliveryFailure(message=receipt(m), error="no such number (simulated)", permanent=True))
                else:
                    try:
                        outbox.deliver(m)
                        log(f"delivered {m.id}")
                        done.append(receipt(m))
                    except OSError as err:
                        failed.append(delivery_pb2.DeliveryFailure(message=receipt(m), error=f"could not deliver: {err.strerror}"[:200]))
            if args.exit_before_ack:
                log("exiting before the ack")
                return
            try:
                if done:
                    acked = stub.Ack(delivery_pb2.AckRequest(messages=done), metadata=metadata, timeout=args.timeout).acked_ids
                    log(f"acked {len(acked)} of {len(done)}")
                if failed:
                    for r in stub.Fail(delivery_pb2.FailRequest(failures=failed), metadata=metadata, timeout=args.timeout).messages:
                        log(f"failed {r.id}: {types_pb2.CourierMessageStatus.Name(r.status)}")
            except grpc.RpcError as err:
                # Unanswered, the messages come back when their leases end, with the same ids
                # (the delivered ones are then acked without a second delivery).
                if args.until_idle or err.code() not in TRANSIENT:
                    raise
                log(f"ack or fail failed: {err.code().name}; the messages come back after their lease")


def parser():
    p = argparse.ArgumentParser(description="An example worker of Codegate's delivery API")
    p.add_argument("--server", default=os.environ.get("CODEGATE_SERVER", "localhost:8080"), help="host:port")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    # Below the server's RPC_TIMEOUT (10s by default): it refuses a longer deadline.
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    p.add_argument("--channel", action="append", choices=sorted(CHANNELS), help="a channel to claim (repeatable; default sms)")
    p.add_argument("--deliver-to", help="append delivered messages to this file (default: stdout)")
    p.add_argument("--batch", type=int, default=10, help="messages per claim (1 to 100)")
    p.add_argument("--lease", type=int, default=60, help="seconds a claim holds (10 to 600)")
    p.add_argument("--wait", type=int, default=20, help="seconds a claim waits for a message when none is due (0 to 30)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between claims after a failed one, or while none is due with --wait 0")
    p.add_argument("--until-idle", action="store_true", help="exit once nothing is due")
    p.add_argument("--refuse", action="append", metavar="PREFIX", help="fail recipients starting with PREFIX (for trying it out)")
    p.add_argument("--unknown", action="append", metavar="PREFIX", help="fail recipients starting with PREFIX for good (for trying it out)")
    p.add_argument("--exit-before-ack", action="store_true", help="exit after delivering, without acking (for trying it out)")
    return p


def main(argv):
    args = parser().parse_args(argv)
    try:
        run(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
