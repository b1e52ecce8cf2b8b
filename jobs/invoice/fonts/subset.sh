#!/usr/bin/env bash
# Makes DejaVuSans.ttf: Debian's DejaVu Sans (fonts-dejavu-core) cut down to
# the scripts an invoice prints and gofpdf lays out correctly (left to right,
# no shaping): Latin, Greek, Cyrillic, Armenian and Georgian, with
# punctuation, currency, letterlike and number symbols, arrows, mathematical
# operators, geometric shapes, and U+FFFD, the placeholder for everything
# else. gofpdf parses and subsets the font again for every PDF, so fewer
# glyphs make every render cheaper (docs/invoices.md has the numbers).
# Needs fonttools (Debian: apt-get install fonttools).
set -euo pipefail
cd "$(dirname "$0")"
ranges="U+0020-007E,U+00A0-024F,U+0250-02FF,U+0300-036F,U+0370-03FF,U+0400-052F,U+0530-058F,U+10A0-10FF,\
U+1C80-1C8F,U+1D00-1DBF,U+1E00-1EFF,U+1F00-1FFF,U+2000-206F,U+2070-209F,U+20A0-20CF,U+2100-214F,U+2150-218F,\
U+2190-21FF,U+2200-22FF,U+25A0-25FF,U+2C60-2C7F,U+2D00-2D2F,U+2DE0-2DFF,U+A640-A69F,U+A720-A7FF,U+FB00-FB06,U+FFFD"
pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf --unicodes="$ranges" --output-file=DejaVuSans.ttf \
  --glyph-names --name-IDs='*' --name-legacy --notdef-outline --drop-tables+=FFTM
