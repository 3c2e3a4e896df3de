// @codegate/client: typed clients of every Codegate service, and the errors they
// answer, decoded. Transports: "@codegate/client/web" (browsers: Connect or
// gRPC-Web over fetch) and "@codegate/client/node" (Node.js: gRPC over HTTP/2,
// or Connect). The messages, enums and services are protobuf-es v2 types.
export { adminTokenInterceptor, createCodegateClients, type AdminToken, type CodegateClients } from "./clients.ts";
export { codegateError, ERROR_DOMAIN, type CodegateError, type FieldViolation } from "./errors.ts";
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/codegate/v1/admin_pb.ts";
export * from "./gen/codegate/v1/code_pb.ts";
export * from "./gen/codegate/v1/delivery_pb.ts";
export * from "./gen/codegate/v1/login_pb.ts";
export * from "./gen/codegate/v1/recovery_pb.ts";
export * from "./gen/codegate/v1/registration_pb.ts";
export * from "./gen/codegate/v1/types_pb.ts";
