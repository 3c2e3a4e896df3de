import { Migration } from "@mikro-orm/migrations";

/**
 * ListIdentities and ListOrganizations read a page in creation order: without
 * an index in that order each page sorted every identity of the organization
 * (every organization) to return fifty. Built CONCURRENTLY, outside a
 * transaction, so that identities can be created and change state while a large
 * table is indexed; a build that failed halfway leaves an invalid index, which
 * the next run drops before building it again.
 */
export class ListingOrder extends Migration {
  override isTransactional(): boolean {
    return false;
  }

  override up(): void {
    this.addSql(`drop index concurrently if exists identity_org_created_idx`);
    this.addSql(`create index concurrently identity_org_created_idx on identity (org_id, created_at, id)`);
    this.addSql(`drop index concurrently if exists organization_created_idx`);
    this.addSql(`create index concurrently organization_created_idx on organization (created_at, id)`);
  }
}
