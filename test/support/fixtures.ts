import type { MessageInitShape } from "@bufbuild/protobuf";
import { createCodegateNodeClients, IdentityState, type Identity, type Organization, type OrganizationSettingsSchema } from "@codegate/client/node";
import { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { ADMIN_TOKEN } from "./server.ts";
import { grpcClient } from "./clients.ts";

/**
 * Admin calls for setting up a test, failing loudly: through the client package
 * (clients/ts, gRPC over HTTP/2), as a service of the operator's would make them.
 * `admin` is a grpc-js client for the tests that check what a grpc-js caller sees;
 * it connects on its first call only.
 */
export function adminFixtures(url: string) {
  const clients = createCodegateNodeClients({ baseUrl: url, adminToken: ADMIN_TOKEN });
  const admin = grpcClient(AdminService, url);
  return {
    admin,
    clients,
    async org(name = "Test Org", settings?: MessageInitShape<typeof OrganizationSettingsSchema>): Promise<Organization> {
      return (await clients.admin.createOrganization({ name, settings })).organization!;
    },
    /** An identity in the given state, created without a registration mail. */
    async identity(orgId: string, username: string, state: "pending" | "active" | "disabled" = "active"): Promise<Identity> {
      const identity = (await clients.admin.createIdentity({ orgId, username, skipRegistrationCode: true })).identity!;
      if (state === "pending") return identity;
      const s = await clients.admin.setIdentityState({ identityId: identity.id, state: state === "active" ? IdentityState.ACTIVE : IdentityState.DISABLED });
      return s.identity!;
    },
    close() {
      clients.close();
      admin.close();
    },
  };
}
