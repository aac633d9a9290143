// Bundles src/review.js with niivue into one file in the Python package, and writes the
// licences of every npm package that ends up in the bundle next to it.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const out = "../../src/segqc/review/static";
const result = await build({
  entryPoints: ["src/review.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome110", "firefox115", "safari16"],
  legalComments: "none",
  metafile: true,
  outfile: join(out, "review.js"),
});

const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (!match) continue;
  const root = input.slice(0, input.indexOf(match[0]) + match[0].length);
  packages.set(match[1], root);
}
let text = "Third-party software bundled in review.js (built from web/review with esbuild)\n";
for (const [name, root] of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const file = readdirSync(root).find((f) => /^(licen[cs]e|copying)/i.test(f));
  text += `\n${"=".repeat(78)}\n${name} ${meta.version} — ${meta.license || "see below"}\n${"=".repeat(78)}\n`;
  // A package that ships no licence file gets the text of its repository's LICENSE, kept in licenses/.
  const kept = join("licenses", `${name.replace("/", "__")}.txt`);
  const source = file ? join(root, file) : existsSync(kept) ? kept : null;
  if (!source) throw new Error(`${name} ships no licence file; put its licence text in ${kept}`);
  text += readFileSync(source, "utf8").trim() + "\n";
}
writeFileSync(join(out, "THIRD_PARTY_LICENSES.txt"), text);
console.log(`bundled ${packages.size} packages: ${[...packages.keys()].sort().join(", ")}`);

// What the bundle was built from, so a test can tell when src/ changed without a rebuild.
const sources = {};
for (const file of ["src/review.js", "build.mjs", "package-lock.json"]) {
  sources[file] = createHash("sha256").update(readFileSync(file)).digest("hex");
}
const versions = Object.fromEntries([...packages].sort().map(([name, root]) =>
  [name, JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version]));
versions.esbuild = JSON.parse(readFileSync("node_modules/esbuild/package.json", "utf8")).version;
writeFileSync(join(out, "BUILD_INFO.json"), JSON.stringify({ sources, versions }, null, 1) + "\n");
