// DeliveryService: the delivery API over the rules of rules/delivery/delivery.ts.
// Admin-authenticated (the request gate, server/rpc.ts).
import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DeliveryMessageSchema, type DeliveryService } from "../../gen/codegate/v1/delivery_pb.ts";
import { CodePurpose, CourierMessageStatus } from "../../gen/codegate/v1/types_pb.ts";
import type { ApiChannel } from "../domain/outbox.ts";
import { DEFAULT_CLAIM_SIZE, DEFAULT_LEASE_MS, type Delivery } from "../rules/delivery/delivery.ts";
import { callDeadlineKey } from "./context-keys.ts";
import type { ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";
import { channelOf, channelProto, purposeProto } from "./mapping.ts";

const toProto = (d: Delivery) =>
  create(DeliveryMessageSchema, {
    id: d.id,
    orgId: d.orgId,
    channel: channelProto[d.channel],
    purpose: purposeProto[d.purpose] ?? CodePurpose.UNSPECIFIED,
    recipient: d.recipient,
    leaseToken: d.leaseToken,
    leaseExpiresAt: timestampFromDate(d.leaseExpiresAt),
    attempt: d.attempt,
    content:
      d.content.kind === "text"
        ? { case: "text", value: { body: d.content.body } }
        : { case: "mail", value: { from: d.content.from, rfc822: d.content.rfc822 } },
  });

/**
 * How long a claim may wait before its call's deadline: what is left of it but the
 * time to claim and answer (a second, or half of what is left when that is less).
 */
function waitBefore(deadline: number): number {
  const left = deadline - performance.now();
  return Math.max(0, left - Math.min(1000, left / 2));
}

export function deliveryService(deps: ServiceDeps): ServiceImpl<typeof DeliveryService> {
  return answeringDomainErrors<ServiceImpl<typeof DeliveryService>>({
    async claim(req, ctx) {
      // The proto's rules take only the API's channels, each once.
      const channels = req.channels.map((c) => channelOf[c]).filter((c): c is ApiChannel => c !== undefined);
      const leaseMs = req.lease ? durationMs(req.lease) : DEFAULT_LEASE_MS;
      const waitMs = Math.min(req.wait ? durationMs(req.wait) : 0, waitBefore(ctx.values.get(callDeadlineKey)));
      const claimed = await deps.delivery.claim(channels, req.maxMessages || DEFAULT_CLAIM_SIZE, leaseMs, { waitMs, signal: ctx.signal });
      return { messages: claimed.map(toProto) };
    },

    async ack(req) {
      return { ackedIds: await deps.delivery.ack(req.messages.map((m) => ({ orgId: m.orgId, id: m.id, leaseToken: m.leaseToken }))) };
    },

    async fail(req) {
      const failures = req.failures.map((f) => ({ orgId: f.message!.orgId, id: f.message!.id, leaseToken: f.message!.leaseToken, error: f.error || "delivery failed", permanent: f.permanent }));
      const rows = await deps.delivery.fail(failures);
      return {
        messages: rows.map((r) => ({
          id: r.id,
          status: r.status === "abandoned" ? CourierMessageStatus.ABANDONED : CourierMessageStatus.QUEUED,
          nextAttemptAt: r.status === "abandoned" ? undefined : timestampFromDate(r.nextAttemptAt),
        })),
      };
    },
  });
}
