// Unwrapping call results in tests without `if` branches around assertions: a call
// that went the other way than expected fails the test right here, saying how.
import type { ServiceError } from "@grpc/grpc-js";
import type { GrpcResult } from "./clients.ts";

/** The answer of a call that must have succeeded. */
export function succeeded<O>(r: GrpcResult<O>): O {
  if (!r.ok) throw new Error(`expected the call to succeed, it failed: ${r.error.code} ${r.error.details}`);
  return r.value;
}

/** The error of a call that must have failed. */
export function failed<O>(r: GrpcResult<O>): ServiceError {
  if (r.ok) throw new Error(`expected the call to fail, it succeeded: ${JSON.stringify(r.value, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
  return r.error;
}

/** The value of a protobuf oneof that must hold the case `expected`. */
export function oneof<O extends { case: string | undefined; value?: unknown }, C extends NonNullable<O["case"]>>(
  field: O,
  expected: C,
): Extract<O, { case: C }>["value"] {
  if (field.case !== expected) throw new Error(`expected the oneof to hold ${expected}, it holds ${field.case}`);
  return (field as Extract<O, { case: C }>).value;
}

/** How Ack and Fail name a claimed message of the delivery API: its id, organization and lease. */
export const receipt = (m: { id: string; orgId: string; leaseToken: string }) => ({ id: m.id, orgId: m.orgId, leaseToken: m.leaseToken });
