#!/usr/bin/env python3
"""A partner-events-gateway client in Python (grpcio).

Sends one unary batch (twice: the resend is answered from the first, by its
idempotency key) and one stream of two batches, and prints every entry's
result, one line each.

Generate the stubs from the repository's proto/ first (examples/README.md):

    python -m grpc_tools.protoc -I ../../proto --python_out=gen \
        --grpc_python_out=gen partnerevents/v1/partner_events.proto

then run:  python client.py --addr 127.0.0.1:50051 --tenant demo
"""

import argparse
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from partnerevents.v1 import partner_events_pb2 as pb  # noqa: E402
from partnerevents.v1 import partner_events_pb2_grpc as pb_grpc  # noqa: E402


def show(label, response):
    """One line per entry: its index and either its event id or its error."""
    for r in response.entries:
        if r.error_code:
            print(f"{label}[{r.index}] error={r.error_code} message={r.error_message!r}")
        else:
            dedup = " deduplicated" if r.deduplicated else ""
            print(f"{label}[{r.index}] event_id={r.event_id} attempts={r.attempts}{dedup}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--tenant", default="demo")
    args = parser.parse_args()

    # A run of its own: the key is this run's invoice, the same on the resend.
    invoice = "in_" + uuid.uuid4().hex[:12]
    with grpc.insecure_channel(args.addr) as channel:
        client = pb_grpc.PartnerEventsStub(channel)
        batch = pb.PutPartnerEventsRequest(
            tenant_id=args.tenant,
            batch_id="python-unary",
            entries=[
                pb.PartnerEventEntry(
                    detail_type="InvoicePaid",
                    detail=json.dumps({"invoice": invoice, "amount_due": 1250}),
                    idempotency_key=f"{invoice}-paid",
                ),
                # Not a JSON object: refused on its own, the other entries go on.
                pb.PartnerEventEntry(detail_type="InvoicePaid", detail="not json"),
            ],
        )
        show("unary", client.PutPartnerEvents(batch, timeout=10))
        show("resend", client.PutPartnerEvents(batch, timeout=10))

        def batches():
            for n in (1, 2):
                yield pb.PutPartnerEventsRequest(
                    tenant_id=args.tenant,
                    batch_id=f"python-stream-{n}",
                    entries=[
                        pb.PartnerEventEntry(
                            detail_type="InvoiceSent",
                            detail=json.dumps({"invoice": f"{invoice}-{n}-{i}"}),
                        )
                        for i in range(2)
                    ],
                )

        # Answers may come back in any order: each names its batch.
        for response in client.StreamPartnerEvents(batches(), timeout=30):
            show(f"stream {response.batch_id}", response)


if __name__ == "__main__":
    main()
