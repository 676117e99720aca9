#!/usr/bin/env bash
# Render the development corpus (MUSDB18-HQ layout) with training/render_corpus.py:
# 300 training songs, 12 validation songs (in train/, listed in setup.yaml) and 16 test
# songs, 20 s each at 22050 Hz, from generated MIDI through three General MIDI SoundFonts
# (FluidR3, TimGM6mb, MuseScore General) and espeak-ng. Seeds: train 1000000+i,
# validation 2000000+i, test 3000000+i, so test songs are unseen MIDI. About 2.9 GB.
#
# Needs (Debian/Ubuntu):
#   apt-get install -y fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
#       musescore-general-soundfont espeak-ng
#   pip install numpy soundfile mido
# Usage: training/render_synth.sh [OUT_DIR] [JOBS]   (default data/corpus, 2 processes)
# Songs already in OUT_DIR are kept, so an interrupted run continues where it stopped.
set -euo pipefail

OUT="${1:-data/corpus}"
JOBS="${2:-2}"

nice -n 5 python "$(dirname "$0")/render_corpus.py" "$OUT" --train 300 --valid 12 --test 16 \
    --seconds 20 --rate 22050 --fonts FluidR3 TimGM6mb MuseScore --jobs "$JOBS"
