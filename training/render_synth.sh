#!/usr/bin/env bash
# Render the FluidSynth development corpus (MUSDB18-HQ layout) used to train the demo model.
# 72 songs x 20 s at 22050 Hz: 64 train + 8 test, spread over three General MIDI SoundFonts.
#
# Needs (Debian/Ubuntu):
#   apt-get install -y fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
#       musescore-general-soundfont espeak-ng
#   pip install numpy soundfile mido
# Usage: training/render_synth.sh [OUT_DIR]   (default data/synth; must not exist yet)
# TOOL: the FluidSynth renderer, synth_stems.py (default ../shared/tools/synth_stems.py).
set -euo pipefail

OUT="${1:-data/synth}"
TOOL="${TOOL:-../shared/tools/synth_stems.py}"
FLUID=/usr/share/sounds/sf2/FluidR3_GM.sf2
TIM=/usr/share/sounds/sf2/TimGM6mb.sf2
MUSE=/usr/share/sounds/sf3/MuseScore_General_Full.sf3

if [ -e "$OUT" ]; then
    echo "error: $OUT exists; remove it or pass another folder" >&2
    exit 1
fi

# Each call: songs "<prefix> <seed>-<i>", rendered from rng seed*1000+i, so distinct
# seeds give distinct music and distinct prefixes keep names unique per SoundFont.
render() {  # split sf prefix seed songs
    nice -n 10 python "$TOOL" "$OUT" --split "$1" --sf2 "$2" --prefix "$3" --seed "$4" \
        --songs "$5" --seconds 20 --rate 22050
}

render train "$FLUID" FluidR3   1 22
render train "$TIM"   TimGM6mb  2 21
render train "$MUSE"  MuseScore 3 21
render test  "$FLUID" FluidR3  11 3
render test  "$TIM"   TimGM6mb 12 3
render test  "$MUSE"  MuseScore 13 2
