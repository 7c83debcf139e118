// Build the dashboard: src/ -> dist/ (served by the broker's HTTP listener at / and /assets/).
//   dist/index.html  the page (refers to /assets/app.js and /assets/app.css)
//   dist/app.js      src/main.js and its npm dependencies, one minified ES module bundle
//   dist/app.css     src/style.css with uPlot's stylesheet inlined
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  sourcemap: true,
  logLevel: "warning",
  legalComments: "linked",
};

await esbuild.build({
  ...common,
  entryPoints: [join(src, "main.js")],
  outfile: join(dist, "app.js"),
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
});

await esbuild.build({
  ...common,
  entryPoints: [join(src, "style.css")],
  outfile: join(dist, "app.css"),
});

await copyFile(join(src, "index.html"), join(dist, "index.html"));
console.log("dashboard built: " + dist);
