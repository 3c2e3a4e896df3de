// Errors as clients see them: a Connect/gRPC code, a machine-readable reason
// (google.rpc.ErrorInfo), and a message that says what to do. Nothing else of
// an internal failure ever leaves the server.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.ts";

export const ERROR_DOMAIN = "codegate";

/** Reasons a client can switch on. */
export const Reason = {
  invalidArgument: "INVALID_ARGUMENT",
  unauthenticated: "UNAUTHENTICATED",
  invalidCode: "INVALID_CODE",
  notFound: "NOT_FOUND",
  alreadyExists: "ALREADY_EXISTS",
  permissionDenied: "PERMISSION_DENIED",
  failedPrecondition: "FAILED_PRECONDITION",
  rateLimited: "RATE_LIMITED",
  deadlineExceeded: "DEADLINE_EXCEEDED",
  internal: "INTERNAL",
  unavailable: "UNAVAILABLE",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export function errorInfo(reason: string, metadata: Record<string, string> = {}) {
  return { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }) };
}

export function apiError(code: Code, reason: Reason, message: string, metadata?: Record<string, string>): ConnectError {
  return new ConnectError(message, code, undefined, [errorInfo(reason, metadata)]);
}

export const invalidArgument = (field: string, expected: string) =>
  apiError(Code.InvalidArgument, Reason.invalidArgument, `${field}: ${expected}`, { field });

export const notFound = (what: string) => apiError(Code.NotFound, Reason.notFound, `${what} not found`);

/** The one answer for a wrong, expired, used, locked or unknown code. */
export const invalidCode = () =>
  apiError(Code.Unauthenticated, Reason.invalidCode, "the code is wrong or no longer valid; ask for a new one");

/** Reads the reason of an error made by apiError (or by validation). */
export function reasonOf(err: ConnectError): string {
  const info = err.findDetails(ErrorInfoSchema)[0];
  if (info) return info.reason;
  return err.code === Code.InvalidArgument ? Reason.invalidArgument : Code[err.code].toUpperCase();
}
