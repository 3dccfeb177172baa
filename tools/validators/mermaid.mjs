// Parses every ```mermaid block of the given Markdown files with Mermaid's own parser (under jsdom, no browser).
// Usage: node tools/validators/mermaid.mjs FILE...   Prints one line per block; exit 1 if any fails to parse.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let failed = 0;
for (const path of process.argv.slice(2)) {
  const blocks = [...readFileSync(path, "utf8").matchAll(/```mermaid\n([\s\S]*?)```/g)].map((match) => match[1]);
  for (const [index, block] of blocks.entries()) {
    try {
      await mermaid.parse(block);
      console.log(`${path}: mermaid block ${index + 1}: ok`);
    } catch (error) {
      failed += 1;
      console.log(`${path}: mermaid block ${index + 1}: ${String(error.message ?? error).split("\n").slice(0, 3).join(" | ")}`);
    }
  }
}
process.exit(failed ? 1 : 0);
