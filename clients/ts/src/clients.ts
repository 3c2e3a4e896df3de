// One typed client per Codegate service, over any Connect transport (web.ts for
// browsers, node.ts for Node.js), and the admin bearer token on the calls of
// AdminService and DeliveryService.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { AdminService } from "./gen/codegate/v1/admin_pb.ts";
import { CodeService } from "./gen/codegate/v1/code_pb.ts";
import { DeliveryService } from "./gen/codegate/v1/delivery_pb.ts";
import { LoginService } from "./gen/codegate/v1/login_pb.ts";
import { RecoveryService } from "./gen/codegate/v1/recovery_pb.ts";
import { RegistrationService } from "./gen/codegate/v1/registration_pb.ts";

/** A client for each service of codegate.v1. */
export interface CodegateClients {
  login: Client<typeof LoginService>;
  registration: Client<typeof RegistrationService>;
  recovery: Client<typeof RecoveryService>;
  /** Code formats (GetCodeFormat): how long a code is, and of which characters. */
  code: Client<typeof CodeService>;
  /** Needs an admin token (the `adminToken` option, or adminTokenInterceptor). */
  admin: Client<typeof AdminService>;
  /** The delivery API (Claim, Ack, Fail) for the operator's own delivery service; needs an admin token. */
  delivery: Client<typeof DeliveryService>;
}

/** The clients of every service over one transport. */
export function createCodegateClients(transport: Transport): CodegateClients {
  return {
    login: createClient(LoginService, transport),
    registration: createClient(RegistrationService, transport),
    recovery: createClient(RecoveryService, transport),
    code: createClient(CodeService, transport),
    admin: createClient(AdminService, transport),
    delivery: createClient(DeliveryService, transport),
  };
}

/** An admin token, or a function answering the current one (read on every call). */
export type AdminToken = string | (() => string | Promise<string>);

/**
 * Sends `Authorization: Bearer <token>` with the calls of AdminService and
 * DeliveryService, and with no other: the public services need no token, and
 * should not see one.
 */
export function adminTokenInterceptor(token: AdminToken): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName === AdminService.typeName || req.service.typeName === DeliveryService.typeName) {
      req.header.set("authorization", `Bearer ${typeof token === "function" ? await token() : token}`);
    }
    return next(req);
  };
}

/** The transport's interceptors: the caller's, then the admin token's. */
export function interceptorsOf(opts: { adminToken?: AdminToken; interceptors?: Interceptor[] }): Interceptor[] {
  return [...(opts.interceptors ?? []), ...(opts.adminToken === undefined ? [] : [adminTokenInterceptor(opts.adminToken)])];
}
