#!/usr/bin/env node
// `node scripts/function-lengths.mjs [limit]`: lists the functions in packages/*/src longer than
// `limit` lines (default 80) and exits 1 if there are any; part of `pnpm lint`. A function this
// long does more than one thing: split it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const limit = Number(process.argv[2] ?? 80);
const files = execFileSync('git', ['ls-files', 'packages/*/src/*.ts', 'packages/*/src/**/*.ts'], { cwd: root, encoding: 'utf8' })
  .trim()
  .split('\n')
  .filter(Boolean);
const long = [];
for (const f of files) {
  const src = ts.createSourceFile(f, fs.readFileSync(path.join(root, f), 'utf8'), ts.ScriptTarget.ES2022, true);
  const visit = (n) => {
    if (ts.isFunctionLike(n) && 'body' in n && n.body) {
      const from = src.getLineAndCharacterOfPosition(n.getStart()).line;
      const to = src.getLineAndCharacterOfPosition(n.getEnd()).line;
      if (to - from + 1 > limit) long.push(`${f}:${from + 1} ${n.name ? n.name.getText() : '(anonymous)'}: ${to - from + 1} lines`);
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
}
if (long.length > 0) {
  console.error(`functions longer than ${limit} lines:\n${long.join('\n')}`);
  process.exit(1);
}
console.log(`function lengths: ${files.length} files, none longer than ${limit} lines`);
