#!/usr/bin/env bash
# The second development domain (issue 7): Unicode characters drawn by many fonts.
# Class = character, instance = font; zero-shot split by class. Fonts come from Debian
# packages (downloaded and extracted, not installed: no root needed); rendering uses
# Pillow and fontTools in the project's .venv. Idempotent: does nothing once made.
#
#   bash scripts/make_fonts_dataset.sh            # -> deps/fonts-dataset/{train,test}/
#   OUT=/tmp/f SIZE=96 bash scripts/make_fonts_dataset.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/deps/fonts-dataset}"
SIZE="${SIZE:-128}"
SEED="${SEED:-0}"
FONTS="$ROOT/deps/fonts"
PY="$ROOT/.venv/bin/python"
[ -f "$OUT/classes.tsv" ] && exit 0
[ -x "$PY" ] || bash scripts/setup.sh

PACKAGES="fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-liberation2 fonts-urw-base35
  fonts-freefont-ttf fonts-croscore fonts-crosextra-carlito fonts-crosextra-caladea fonts-noto-core
  fonts-open-sans fonts-linuxlibertine fonts-texgyre fonts-paratype fonts-junicode fonts-gfs-didot
  fonts-stix fonts-roboto-unhinted fonts-cantarell"
if [ ! -f "$FONTS/.done" ]; then
  echo "[fonts] fetching font packages from Debian" >&2
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2086
  ( cd "$tmp" && (apt-get download $PACKAGES >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download $PACKAGES >/dev/null; }) )
  rm -rf "$FONTS.tmp" && mkdir -p "$FONTS.tmp"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$FONTS.tmp"; done
  rm -rf "$tmp" "$FONTS" && mv "$FONTS.tmp" "$FONTS" && touch "$FONTS/.done"
fi
"$PY" -c 'import PIL, fontTools' 2>/dev/null || "$PY" -m pip install -q pillow==11.3.0 fonttools==4.60.1 >&2

echo "[fonts] rendering into $OUT" >&2
rm -rf "$OUT.tmp"
"$PY" scripts/render_fonts.py --fonts "$FONTS" --out "$OUT.tmp" --size "$SIZE" --seed "$SEED"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"   # only a complete dataset becomes the current one
