import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { MikroORM as PostgresORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import { MikroORM as PgliteORM } from "@mikro-orm/pglite";
import { Migrator } from "@mikro-orm/migrations";
import type { MikroORM } from "@mikro-orm/core";
import type { AbstractSqlDriver, SqlEntityManager } from "@mikro-orm/sql";
import type { Config } from "../config/config.ts";
import { lockEmbeddedDatabase } from "./embedded-lock.ts";
import { entities } from "./entities.ts";
import { migrations } from "./migrations/index.ts";

/** The ORM on either driver; both speak PostgreSQL through the same SQL layer. */
export type Orm = MikroORM<AbstractSqlDriver, SqlEntityManager>;

/** The pg pool MikroORM holds on PostgreSQL, with the client class and options it opens connections with. */
export type PgPool = pg.Pool & { Client: typeof pg.Client; options: pg.PoolConfig };

/** The pg pool of `orm` on PostgreSQL; undefined on PGlite, which has none. */
export async function pgPoolOf(orm: Orm): Promise<PgPool | undefined> {
  const native = (await orm.em.getConnection().getNativeClient()) as Partial<PgPool> | undefined;
  return typeof native?.connect === "function" && typeof native.totalCount === "number" && typeof native.Client === "function" ? (native as PgPool) : undefined;
}

const migrationOptions = {
  tableName: "codegate_migrations",
  migrationsList: migrations,
  // Each migration in a transaction of its own, or in none when it says so (an index built concurrently).
  transactional: true,
  allOrNothing: false,
  snapshot: false,
  silent: true,
} as const;

type OrmConfig = Pick<Config, "databaseUrl" | "dataDir" | "dbPoolSize"> & Partial<Pick<Config, "statementTimeoutMs">>;

/**
 * Connects to DATABASE_URL, or to PGlite kept in DATA_DIR/pglite when unset.
 * On PostgreSQL every statement is bounded by `statementTimeoutMs` when given,
 * so that the work of an RPC cannot outlive its deadline by long.
 */
export async function openOrm(config: OrmConfig): Promise<Orm> {
  const common = {
    entities,
    extensions: [Migrator],
    migrations: migrationOptions,
    discovery: { warnWhenNoEntities: false },
    debug: false,
    allowGlobalContext: true,
  };
  if (config.databaseUrl) {
    const orm = await PostgresORM.init({
      ...common,
      clientUrl: config.databaseUrl,
      pool: { min: 0, max: config.dbPoolSize },
      // node-postgres options: a connection (new or from the pool) waited for at most this long.
      driverOptions: {
        connectionTimeoutMillis: Math.min(5_000, config.statementTimeoutMs ?? 5_000),
        keepAlive: true,
        ...(config.statementTimeoutMs ? { statement_timeout: config.statementTimeoutMs } : {}),
      },
    });
    return orm as unknown as Orm;
  }
  const dir = join(config.dataDir, "pglite");
  mkdirSync(dir, { recursive: true });
  const release = lockEmbeddedDatabase(join(config.dataDir, "pglite.lock"), `The embedded database in ${dir}`);
  let orm: Orm;
  try {
    orm = (await PgliteORM.init({ ...common, dbName: dir })) as unknown as Orm;
  } catch (err) {
    release();
    throw err;
  }
  const close = orm.close.bind(orm);
  orm.close = async (force?: boolean) => {
    try {
      await close(force);
    } finally {
      release();
    }
  };
  return orm;
}

/**
 * Applies pending migrations and opens the ORM to serve with. On PostgreSQL the
 * migrations run over a connection of their own, without the statement timeout
 * (a migration of a large table may take longer than any RPC).
 */
export async function openMigrated(config: OrmConfig): Promise<{ orm: Orm; applied: string[] }> {
  if (config.databaseUrl && config.statementTimeoutMs) {
    const migrator = await openOrm({ ...config, dbPoolSize: 1, statementTimeoutMs: undefined });
    let applied: string[];
    try {
      applied = await migrate(migrator);
    } finally {
      await migrator.close();
    }
    return { orm: await openOrm(config), applied };
  }
  const orm = await openOrm(config);
  return { orm, applied: await migrate(orm) };
}

/** Any fixed key: the processes that migrate one database take turns on it. */
const MIGRATION_LOCK = 7162587264224965733n;

/** How often a process that waits for another's migrations asks for the lock again. */
const MIGRATION_LOCK_POLL_MS = 200;

/**
 * Applies the checked-in migrations that have not run yet; answers their names.
 * On PostgreSQL, servers that start together take turns under an advisory lock
 * held by a connection of its own (ending it releases the lock, however the
 * migration ends): the first applies the migrations, the others then find
 * nothing to do. Without it each would run the first migration, and all but one
 * fail on the tables it had made. The others ask again and again rather than
 * wait in pg_advisory_lock: a waiting statement holds a snapshot, which an index
 * built CONCURRENTLY waits for, a deadlock. PGlite serves one process.
 */
export async function migrate(orm: Orm): Promise<string[]> {
  if (!(orm.driver instanceof PostgreSqlDriver)) return (await orm.migrator.up()).map((m) => m.name);
  const lock = new pg.Client({ connectionString: orm.config.get("clientUrl"), connectionTimeoutMillis: 5_000, keepAlive: true });
  // A connection lost while migrating (its error is reported by the migration's own
  // statements, or not at all) releases the lock; the migrations stay safe to run
  // twice: each is one transaction, or an index dropped and built again.
  lock.on("error", () => {});
  await lock.connect();
  try {
    // Idle for as long as the migrations take: a server that ends idle sessions must not end this one.
    await lock.query("set idle_session_timeout = 0");
    while (!(await lock.query(`select pg_try_advisory_lock(${MIGRATION_LOCK}) as locked`)).rows[0].locked) await sleep(MIGRATION_LOCK_POLL_MS);
    return (await orm.migrator.up()).map((m) => m.name);
  } finally {
    await lock.end().catch(() => {});
  }
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.migrator.getPending()).map((m) => m.name);
}
