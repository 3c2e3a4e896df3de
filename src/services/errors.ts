// Errors as clients see them: a Connect/gRPC code, a machine-readable reason
// (google.rpc.ErrorInfo), and a message that says what to do. Nothing else of
// an internal failure ever leaves the server.
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.ts";
import {
  AlreadyExists,
  DomainError,
  FailedPrecondition,
  InvalidArgument,
  InvalidCode,
  NotFound,
  PermissionDenied,
  RateLimited,
} from "../domain/errors.ts";

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

/** resource_exhausted with a RetryInfo of whole seconds (clients and Retry-After read it). */
export function rateLimited(retryAfterMs: number): ConnectError {
  const err = apiError(Code.ResourceExhausted, Reason.rateLimited, `too many requests; try again in ${Math.ceil(retryAfterMs / 1000)} s`);
  err.details.push({ desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(Math.ceil(retryAfterMs / 1000) * 1000) }) });
  return err;
}

/** A refusal of the rules as the caller sees it; anything else is thrown as it is. */
export function toConnectError(err: unknown): unknown {
  if (!(err instanceof DomainError)) return err;
  if (err instanceof InvalidCode) return invalidCode();
  if (err instanceof RateLimited) return rateLimited(err.retryAfterMs);
  if (err instanceof InvalidArgument) return apiError(Code.InvalidArgument, Reason.invalidArgument, err.message, { field: err.field });
  if (err instanceof NotFound) return apiError(Code.NotFound, Reason.notFound, err.message);
  if (err instanceof AlreadyExists) return apiError(Code.AlreadyExists, Reason.alreadyExists, err.message, { field: err.field });
  if (err instanceof FailedPrecondition) return apiError(Code.FailedPrecondition, Reason.failedPrecondition, err.message);
  if (err instanceof PermissionDenied) return apiError(Code.PermissionDenied, Reason.permissionDenied, err.message);
  return apiError(Code.Internal, Reason.internal, "internal error");
}

/** A service whose every method answers a refusal of the rules as its Connect error. */
export function answeringDomainErrors<T extends object>(impl: T): T {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(impl)) {
    wrapped[name] =
      typeof method !== "function"
        ? method
        : async (...args: unknown[]) => {
            try {
              return await (method as (...a: unknown[]) => unknown).apply(impl, args);
            } catch (err) {
              throw toConnectError(err);
            }
          };
  }
  return wrapped as T;
}
