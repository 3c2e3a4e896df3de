/** The states of a mail in the outbox. */
export const mailStatuses = ["queued", "sent", "abandoned"] as const;
export type MailStatus = (typeof mailStatuses)[number];

/**
 * How a message leaves: `smtp`, mailed by the courier; `mail_api`, the mail
 * handed to the delivery API; `sms`, a short text (the code only) to the
 * identity's phone number, handed to the delivery API.
 */
export const channels = ["smtp", "mail_api", "sms"] as const;
export type Channel = (typeof channels)[number];
/** The channels the delivery API hands out (the courier takes the others). */
export type ApiChannel = Exclude<Channel, "smtp">;
