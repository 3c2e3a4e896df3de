import { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { IdentityState, type Identity, type Organization } from "../../gen/codegate/v1/types_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { OrganizationSettingsSchema } from "../../gen/codegate/v1/types_pb.ts";
import { ADMIN_TOKEN } from "./server.ts";
import { bearer, grpcClient } from "./clients.ts";

/** Admin calls for setting up a test, failing loudly. */
export function adminFixtures(url: string) {
  const admin = grpcClient(AdminService, url);
  const auth = bearer(ADMIN_TOKEN);
  return {
    admin,
    async org(name = "Test Org", settings?: MessageInitShape<typeof OrganizationSettingsSchema>): Promise<Organization> {
      const r = await admin.call("createOrganization", { name, settings }, auth);
      if (!r.ok) throw r.error;
      return r.value.organization!;
    },
    /** An identity in the given state, created without a registration mail. */
    async identity(orgId: string, username: string, state: "pending" | "active" | "disabled" = "active"): Promise<Identity> {
      const r = await admin.call("createIdentity", { orgId, username, skipRegistrationCode: true }, auth);
      if (!r.ok) throw r.error;
      const identity = r.value.identity!;
      if (state === "pending") return identity;
      const s = await admin.call(
        "setIdentityState",
        { identityId: identity.id, state: state === "active" ? IdentityState.ACTIVE : IdentityState.DISABLED },
        auth,
      );
      if (!s.ok) throw s.error;
      return s.value.identity!;
    },
    close: () => admin.close(),
  };
}
