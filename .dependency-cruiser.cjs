// The direction of src/'s imports, checked in CI (`npm run check:layers`).
// Each layer may import the layers below it, never one above:
//
//   main.ts                    the command line
//   server/                    listeners, REST routing, CORS, the recovery page; ops/ (health, reflection, metrics)
//   services/                  one file per proto service: protobuf <-> domain, domain errors -> Connect codes
//   rules/                     codes, limits, mail, courier, tokens: the product's rules
//   store/                     every SQL statement and every ORM use
//   domain/ config/ lib/       shared types and errors; settings; small helpers
//
// and the things each layer owns stay in it: protobuf and Connect above rules/,
// SQL drivers and MikroORM in store/.
const below = {
  lib: ["lib"],
  domain: ["domain", "lib"],
  config: ["config", "domain", "lib"],
  store: ["store", "config", "domain", "lib"],
  rules: ["rules", "store", "config", "domain", "lib"],
  services: ["services", "rules", "store", "config", "domain", "lib"],
  server: ["server", "services", "rules", "store", "config", "domain", "lib"],
};

const layerRules = Object.entries(below).map(([layer, allowed]) => ({
  name: `${layer}-imports-downward`,
  comment: `src/${layer}/ may import only ${allowed.map((l) => `src/${l}/`).join(", ")}`,
  severity: "error",
  from: { path: `^src/${layer}/` },
  to: { path: "^src/", pathNot: `^src/(${allowed.join("|")})/` },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment: "a cycle has no direction: split the module or move what both need below them",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    ...layerRules,
    {
      name: "protobuf-and-connect-above-rules",
      comment: "the rules and everything under them speak the domain's types; protobuf and Connect belong to services/ and server/",
      severity: "error",
      from: { path: "^src/(domain|lib|config|store|rules)/" },
      to: { path: "^(gen/|node_modules/@connectrpc/|node_modules/@bufbuild/)" },
    },
    {
      name: "database-in-store",
      comment: "every statement and every ORM use lives in src/store/",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/store/" },
      to: { path: "^node_modules/(@mikro-orm|pg|pg-pool|@electric-sql)/" },
    },
    {
      name: "gen-is-generated",
      comment: "generated code depends on nothing of ours",
      severity: "error",
      from: { path: "^gen/" },
      to: { path: "^src/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "node", "default"] },
  },
};
