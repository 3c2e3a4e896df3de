// AdminService's event trail: ListEvents (a page, newest first) and WatchEvents
// (followed live from a cursor, rules/event-trail.ts).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import {
  EventSchema,
  EventType as EventTypeProto,
  ListEventsResponseSchema,
  WatchEventsResponseSchema,
  type Event,
  type ListEventsRequest,
  type ListEventsResponse,
  type WatchEventsRequest,
  type WatchEventsResponse,
} from "../../gen/codegate/v1/admin_pb.ts";
import { CodePurpose } from "../../gen/codegate/v1/types_pb.ts";
import { cursorOf, positionOf, type EventType, type TrailEvent } from "../domain/events.ts";
import { followEvents } from "../rules/event-trail.ts";
import { listEvents } from "../store/events.ts";
import type { ServiceDeps } from "./deps.ts";
import { invalidArgument } from "./errors.ts";
import { purposeProto } from "./mapping.ts";
import { DEFAULT_PAGE_SIZE } from "./paging.ts";

const typeProto: Record<EventType, EventTypeProto> = {
  "code.issued": EventTypeProto.CODE_ISSUED,
  "code.verified": EventTypeProto.CODE_VERIFIED,
  "code.failed": EventTypeProto.CODE_FAILED,
  "code.locked": EventTypeProto.CODE_LOCKED,
  "mail.sent": EventTypeProto.MAIL_SENT,
  "mail.abandoned": EventTypeProto.MAIL_ABANDONED,
  "organization.created": EventTypeProto.ORGANIZATION_CREATED,
  "organization.settings_updated": EventTypeProto.ORGANIZATION_SETTINGS_UPDATED,
  "identity.created": EventTypeProto.IDENTITY_CREATED,
  "identity.state_changed": EventTypeProto.IDENTITY_STATE_CHANGED,
  "identity.phone_number_set": EventTypeProto.IDENTITY_PHONE_NUMBER_SET,
  "codes.invalidated": EventTypeProto.CODES_INVALIDATED,
  "mail_template.set": EventTypeProto.MAIL_TEMPLATE_SET,
  "mail_template.deleted": EventTypeProto.MAIL_TEMPLATE_DELETED,
};
const typeOf = new Map(Object.entries(typeProto).map(([k, v]) => [v, k as EventType]));

export const eventToProto = (e: TrailEvent): Event =>
  create(EventSchema, {
    cursor: cursorOf(e),
    id: BigInt(e.id),
    orgId: e.orgId,
    type: typeProto[e.type] ?? EventTypeProto.UNSPECIFIED,
    purpose: (e.purpose && purposeProto[e.purpose]) || CodePurpose.UNSPECIFIED,
    identityId: e.identityId ?? "",
    codeId: e.codeId ?? "",
    mailId: e.mailId ?? "",
    actor: e.actor ?? "",
    requestId: e.requestId ?? "",
    details: e.details,
    occurredAt: timestampFromDate(e.occurredAt),
  });

export function eventHandlers(deps: ServiceDeps) {
  return {
    async listEvents(req: ListEventsRequest): Promise<ListEventsResponse> {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const before = req.pageToken ? positionOf(req.pageToken) : undefined;
      if (req.pageToken && !before) throw invalidArgument("page_token", "the next_page_token of an earlier answer, or empty for the first page");
      const filter = { orgId: req.orgId, type: typeOf.get(req.type), identityId: req.identityId || undefined };
      const rows = await listEvents(deps.sql, filter, before, size);
      const events = rows.slice(0, size);
      // The next page starts before the last event of this one.
      return create(ListEventsResponseSchema, { events: events.map(eventToProto), nextPageToken: rows.length > size ? cursorOf(events[events.length - 1]) : "" });
    },

    // Ends when the caller goes away, at the stream's maximum lifetime and at
    // shutdown: the server's pipeline bounds every stream (server/rpc.ts).
    async *watchEvents(req: WatchEventsRequest, ctx: HandlerContext): AsyncGenerator<WatchEventsResponse> {
      const after = req.after ? positionOf(req.after) : undefined;
      if (req.after && !after) throw invalidArgument("after", "the cursor of an event, or empty for the oldest retained event");
      for await (const batch of followEvents(deps.sql, { orgId: req.orgId, after, pollMs: deps.config.eventsPollMs, signal: ctx.signal })) {
        yield create(WatchEventsResponseSchema, { events: batch.map(eventToProto) });
      }
    },
  };
}
