// Builds the console into the folder the query API serves at "/" (flowlens_dagster/api/static/).
// One bundle, no CDN: everything the page loads comes from this folder.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.FLOWLENS_CONSOLE_OUT || join(here, "..", "flowlens_dagster", "api", "static");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: ["chrome110"],
  outfile: join(out, "console.js"),
  legalComments: "linked",
  logLevel: "warning",
});
for (const file of ["index.html", "console.css"]) cpSync(join(here, "src", file), join(out, file));
console.log(`console built into ${out}`);
