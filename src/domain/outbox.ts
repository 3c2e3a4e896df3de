/** The states of a mail in the outbox. */
export const mailStatuses = ["queued", "sent", "abandoned"] as const;
export type MailStatus = (typeof mailStatuses)[number];
