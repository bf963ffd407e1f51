// A partner-events-gateway client in TypeScript (@grpc/grpc-js, with
// @grpc/proto-loader reading the repository's proto/ at run time: nothing
// to generate).
//
// Sends one unary batch (twice: the resend is answered from the first, by
// its idempotency key) and one stream of two batches, and prints every
// entry's result, one line each.
//
//   npm ci && npm run build
//   node dist/client.js --addr 127.0.0.1:50051 --tenant demo [--proto ../../proto]

import * as path from "node:path";
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

// The messages as this client uses them (field names as in the proto).
interface Entry {
  detail_type: string;
  detail?: string;
  idempotency_key?: string;
}
interface Batch {
  tenant_id: string;
  batch_id: string;
  entries: Entry[];
}
interface Result {
  index: number;
  event_id: string;
  error_code: string;
  error_message: string;
  attempts: number;
  deduplicated: boolean;
}
interface Answer {
  batch_id: string;
  entries: Result[];
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function show(label: string, answer: Answer): void {
  for (const r of answer.entries) {
    if (r.error_code) {
      console.log(`${label}[${r.index}] error=${r.error_code} message=${JSON.stringify(r.error_message)}`);
    } else {
      const dedup = r.deduplicated ? " deduplicated" : "";
      console.log(`${label}[${r.index}] event_id=${r.event_id} attempts=${r.attempts}${dedup}`);
    }
  }
}

function deadline(seconds: number): grpc.CallOptions {
  return { deadline: new Date(Date.now() + seconds * 1000) };
}

async function main(): Promise<void> {
  const addr = arg("addr", "127.0.0.1:50051");
  const tenant = arg("tenant", "demo");
  const protoDir = arg("proto", path.join(__dirname, "..", "..", "..", "proto"));

  const definition = protoLoader.loadSync("partnerevents/v1/partner_events.proto", {
    includeDirs: [protoDir],
    keepCase: true, // snake_case field names, as in the proto
    longs: Number,
    enums: String,
    defaults: true, // unset fields read as "" / 0 / false, as in proto3
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as any;
  const client = new pkg.partnerevents.v1.PartnerEvents(addr, grpc.credentials.createInsecure());

  const put = (batch: Batch): Promise<Answer> =>
    new Promise((resolve, reject) =>
      client.PutPartnerEvents(batch, deadline(10), (err: grpc.ServiceError | null, answer: Answer) =>
        err ? reject(err) : resolve(answer),
      ),
    );

  // A run of its own: the key is this run's invoice, the same on the resend.
  const invoice = `in_${randomUUID().slice(0, 12)}`;
  const batch: Batch = {
    tenant_id: tenant,
    batch_id: "typescript-unary",
    entries: [
      {
        detail_type: "InvoicePaid",
        detail: JSON.stringify({ invoice, amount_due: 1250 }),
        idempotency_key: `${invoice}-paid`,
      },
      // Not a JSON object: refused on its own, the other entries go on.
      { detail_type: "InvoicePaid", detail: "not json" },
    ],
  };
  show("unary", await put(batch));
  show("resend", await put(batch));

  // Answers may come back in any order: each names its batch.
  await new Promise<void>((resolve, reject) => {
    const stream = client.StreamPartnerEvents(deadline(30));
    stream.on("data", (answer: Answer) => show(`stream ${answer.batch_id}`, answer));
    stream.on("error", reject);
    stream.on("end", resolve);
    for (const n of [1, 2]) {
      stream.write({
        tenant_id: tenant,
        batch_id: `typescript-stream-${n}`,
        entries: [0, 1].map((i) => ({
          detail_type: "InvoiceSent",
          detail: JSON.stringify({ invoice: `${invoice}-${n}-${i}` }),
        })),
      });
    }
    stream.end();
  });
  client.close();
}

main().catch((err) => {
  console.error(`error: ${err.message ?? err}`);
  process.exit(1);
});
