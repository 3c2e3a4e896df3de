// Migrations in the order they run. Listed here rather than discovered from the
// folder, so that they load the same from source and from any bundle.
import type { MigrationObject } from "@mikro-orm/core";
import { InitialSchema } from "./20261123-initial.ts";
import { RateLimits } from "./20261123-rate-limits.ts";
import { CodeBindings } from "./20261130-code-bindings.ts";
import { CodeHashInput } from "./20261201-code-hash-input.ts";
import { OutboxByOrganization } from "./20261201-outbox-by-organization.ts";
import { MailTemplates } from "./20261201-mail-templates.ts";
import { DeliveryChannels } from "./20261202-delivery-channels.ts";
import { Events } from "./20261202-events.ts";
import { ListingOrder } from "./20261203-listing-order.ts";
import { JobTurns } from "./20261204-job-turns.ts";
import { GuessTurns } from "./20261205-guess-turns.ts";
import { GuessGates } from "./20261206-guess-gates.ts";
import { RetentionOrder } from "./20261207-retention-order.ts";
import { AdminTokenScopes } from "./20261208-admin-token-scopes.ts";

export const migrations: MigrationObject[] = [
  { name: "20261123-initial", class: InitialSchema },
  { name: "20261123-rate-limits", class: RateLimits },
  { name: "20261130-code-bindings", class: CodeBindings },
  { name: "20261201-code-hash-input", class: CodeHashInput },
  { name: "20261201-outbox-by-organization", class: OutboxByOrganization },
  { name: "20261201-mail-templates", class: MailTemplates },
  { name: "20261202-delivery-channels", class: DeliveryChannels },
  { name: "20261202-events", class: Events },
  { name: "20261203-listing-order", class: ListingOrder },
  { name: "20261204-job-turns", class: JobTurns },
  { name: "20261205-guess-turns", class: GuessTurns },
  { name: "20261206-guess-gates", class: GuessGates },
  { name: "20261207-retention-order", class: RetentionOrder },
  { name: "20261208-admin-token-scopes", class: AdminTokenScopes },
];
