// How an organization's codes leave, per purpose (settings.delivery): mailed by
// the courier over SMTP (the default), or handed to the delivery API as the mail
// (`mail_api`) or as a short text to the identity's phone number (`sms`).
import type { Org } from "../../domain/organization.ts";
import type { Channel } from "../../domain/outbox.ts";
import type { Purpose } from "../../domain/purpose.ts";

/** The settings keep codegate.v1.DeliveryChannel by name (their protobuf JSON). */
const byName: Readonly<Record<string, Channel>> = {
  DELIVERY_CHANNEL_SMTP: "smtp",
  DELIVERY_CHANNEL_MAIL_API: "mail_api",
  DELIVERY_CHANNEL_SMS: "sms",
};

/** The channel of an organization's codes of a purpose. */
export function channelOf(org: Org, purpose: Purpose): Channel {
  return byName[org.settings.delivery?.[purpose] ?? ""] ?? "smtp";
}

/** The channel of a mail (a code's without a phone number, or a notice): the purpose's when it hands mails to the API, else SMTP. */
export function mailChannelOf(org: Org, purpose: Purpose): Channel {
  return channelOf(org, purpose) === "mail_api" ? "mail_api" : "smtp";
}
