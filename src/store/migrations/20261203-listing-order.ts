import { Migration } from "@mikro-orm/migrations";
import { PostgreSqlDriver } from "@mikro-orm/postgresql";

/**
 * The admin listings read a page in creation order. Without an index in that
 * order each page of ListIdentities and ListOrganizations sorted every identity of
 * the organization (every organization) to return fifty, and ListCourierMessages
 * of the abandoned mails walked the organization's whole history to find them.
 * Built CONCURRENTLY, outside a transaction, so that the tables take writes while
 * a large one is indexed; a build that failed halfway leaves an invalid index,
 * which the next run drops before building it again.
 *
 * The identities' and organizations' indexes are partial on a condition that
 * every row the server writes meets and that the listings state, and no other
 * statement: a send or a verification finds its identity by (org_id,
 * username_normalized), and on statistics that never saw the organization the
 * planner rated an index that leads with org_id alone as good, and read every
 * identity of the organization to find one (test/stale-statistics.test.ts); an
 * organization found by tenant, the first in creation order, could likewise be
 * looked for along the listing's index among all organizations. A partial index
 * serves only the statements whose conditions imply its predicate. ("created_at
 * is not null" would not do: PostgreSQL drops that condition on a not-null column
 * before it looks for an index.)
 */
export class ListingOrder extends Migration {
  override isTransactional(): boolean {
    return false;
  }

  override up(): void {
    // The embedded PGlite serves one process, so nothing writes beside the build, and
    // its CONCURRENTLY has failed with "tuple concurrently updated" (electric-sql/pglite#901).
    const online = this.driver instanceof PostgreSqlDriver ? "concurrently " : "";
    this.addSql(`drop index ${online}if exists identity_org_created_idx`);
    this.addSql(`create index ${online}identity_org_created_idx on identity (org_id, created_at, id) where created_at > '-infinity'`);
    this.addSql(`drop index ${online}if exists organization_created_idx`);
    this.addSql(`create index ${online}organization_created_idx on organization (created_at, id) where created_at > '-infinity'`);
    // ListCourierMessages of the abandoned mails, few among the organization's history.
    this.addSql(`drop index ${online}if exists courier_message_abandoned_idx`);
    this.addSql(`create index ${online}courier_message_abandoned_idx on courier_message (org_id, created_at desc, id desc) where status = 'abandoned'`);
  }
}
