// The API's services, one file per proto service, as the server registers them
// (for gRPC, gRPC-Web, Connect and the REST routes alike).
import { createServiceImplSpec, type ServiceImplSpec } from "@connectrpc/connect";
import { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { CodeService } from "../../gen/codegate/v1/code_pb.ts";
import { DeliveryService } from "../../gen/codegate/v1/delivery_pb.ts";
import { LoginService } from "../../gen/codegate/v1/login_pb.ts";
import { RecoveryService } from "../../gen/codegate/v1/recovery_pb.ts";
import { RegistrationService } from "../../gen/codegate/v1/registration_pb.ts";
import { adminService } from "./admin.ts";
import { codeService } from "./code.ts";
import type { ServiceDeps } from "./deps.ts";
import { deliveryService } from "./delivery.ts";
import { loginService } from "./login.ts";
import { recoveryService } from "./recovery.ts";
import { registrationService } from "./registration.ts";

export type { ServiceDeps } from "./deps.ts";

export function apiServices(deps: ServiceDeps): ServiceImplSpec[] {
  return [
    createServiceImplSpec<typeof AdminService>(AdminService, adminService(deps)),
    createServiceImplSpec<typeof LoginService>(LoginService, loginService(deps)),
    createServiceImplSpec<typeof RegistrationService>(RegistrationService, registrationService(deps)),
    createServiceImplSpec<typeof RecoveryService>(RecoveryService, recoveryService(deps)),
    createServiceImplSpec<typeof CodeService>(CodeService, codeService(deps)),
    createServiceImplSpec<typeof DeliveryService>(DeliveryService, deliveryService(deps)),
  ];
}
