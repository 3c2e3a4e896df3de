// What a failed call tells, decoded from the error details the server sends:
// the machine-readable reason and the field it names (google.rpc.ErrorInfo),
// the rules a request broke (buf.validate.Violations), and when to try again
// (google.rpc.RetryInfo).
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema, type FieldPath } from "./gen/buf/validate/validate_pb.ts";
import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";

/** The domain of the ErrorInfo details Codegate sends. */
export const ERROR_DOMAIN = "codegate";

/** One rule of the request's proto that its value broke. */
export interface FieldViolation {
  /** The field's path in the request, by proto names (`settings.login_code.length`); "" for a rule on the whole message. */
  field: string;
  /** The rule's id (`string.pattern`, `org_id_or_tenant_id`, …). */
  rule: string;
  message: string;
}

export interface CodegateError {
  /** The Connect/gRPC code. */
  code: Code;
  /** The code's name as the Connect protocol writes it (`invalid_argument`, `resource_exhausted`, …). */
  codeName: string;
  /**
   * Codegate's reason (`INVALID_ARGUMENT`, `INVALID_CODE`, `RATE_LIMITED`,
   * `UNAUTHENTICATED`, `NOT_FOUND`, …); undefined when the error did not come
   * from a Codegate server (a network failure, a proxy).
   */
  reason: string | undefined;
  /** The message, for a person: which field, what was expected. */
  message: string;
  /** The field the error is about (proto name), when it names one. */
  field: string | undefined;
  /** The request's broken rules, when its validation failed. */
  violations: FieldViolation[];
  /** How long to wait before trying again, when the server says (rate limits, the database out of reach). */
  retryAfterMs: number | undefined;
  /** The request id the server logged, to quote when reporting an internal error. */
  requestId: string | undefined;
  /** The ConnectError itself. */
  cause: ConnectError;
}

/** Decodes any error of a call (a ConnectError, or anything it was turned into one from). */
export function codegateError(err: unknown): CodegateError {
  const cause = ConnectError.from(err);
  const info = cause.findDetails(ErrorInfoSchema).find((d) => d.domain === ERROR_DOMAIN);
  const violations = cause
    .findDetails(ViolationsSchema)
    .flatMap((v) => v.violations)
    .map((v) => ({ field: fieldPath(v.field), rule: v.ruleId, message: v.message }));
  const delay = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return {
    code: cause.code,
    codeName: codeName(cause.code),
    // A request refused by its proto's rules carries the violations alone.
    reason: info?.reason ?? (violations.length ? "INVALID_ARGUMENT" : undefined),
    message: cause.rawMessage,
    field: info?.metadata.field || violations.find((v) => v.field !== "")?.field,
    violations,
    retryAfterMs: delay ? Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6) : undefined,
    requestId: cause.metadata.get("x-request-id") ?? undefined,
    cause,
  };
}

/** `a.b[0].c["key"]`, by proto field names. */
function fieldPath(path: FieldPath | undefined): string {
  let out = "";
  for (const e of path?.elements ?? []) {
    out += out ? `.${e.fieldName}` : e.fieldName;
    const s = e.subscript;
    if (s.case === "index" || s.case === "intKey" || s.case === "uintKey" || s.case === "boolKey") out += `[${String(s.value)}]`;
    else if (s.case === "stringKey") out += `[${JSON.stringify(s.value)}]`;
  }
  return out;
}

/** `Code.ResourceExhausted` as `resource_exhausted`. */
function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}
