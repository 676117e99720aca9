#!/usr/bin/env bash
# Render every song the bundled demo model trained on, and our five held-out sets, in
# MUSDB18-HQ layout under DATA (docs/separation.md, "How to reproduce it"):
#   corpus/             328 songs through three General MIDI SoundFonts (render_synth.sh):
#                       300 training, 12 validation, 16 test
#   corpus_new/         160 training songs, 60% of their parts on Hydrogen kits and our
#                       training-pool synthesizers, a quarter without vocals
#   melody120/          120 training songs without singing, the tune on an instrument in
#                       about half of them
#   produced/           the 16 corpus test songs mixed and mastered        (held out)
#   unseen/             16 test songs on instruments no training song uses (held out)
#   unseen_produced/    the same, mixed and mastered                      (held out)
#   novocals/           16 more test songs on those instruments, no singing (held out)
#   novocals_produced/  the same, mixed and mastered                      (held out)
# 6.1 GB, about 8 minutes on 2 cores. Songs already there are kept. Every song comes from
# its seed, so a rerun anywhere renders the same songs (the held-out scores of the bundled
# model in docs/separation.md reproduce to 0.01 dB).
#
# Needs (Debian/Ubuntu):
#   apt-get install -y fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
#       musescore-general-soundfont espeak-ng hydrogen-drumkits
#   pip install mido
# Usage: training/render_bundled_data.sh [DATA] [JOBS]   (default data, 2 processes)
set -euo pipefail

DATA="${1:-data}"
JOBS="${2:-2}"
HERE="$(dirname "$0")"
render() { nice -n 5 python "$HERE/render_corpus.py" "$@" --jobs "$JOBS"; }

"$HERE/render_synth.sh" "$DATA/corpus" "$JOBS"
render "$DATA/corpus_new" --train 160 --train-from 300 --instruments 0.6 --pool train --missing 0.25
render "$DATA/melody120" --train 120 --train-from 616 --instruments 0.6 --pool train --missing 1 \
    --melody 1
render "$DATA/unseen" --test 16 --instruments 1 --pool held_out
render "$DATA/novocals" --test 16 --test-from 16 --instruments 0.5 --pool held_out --missing 1
for pair in corpus:produced unseen:unseen_produced novocals:novocals_produced; do
    python "$HERE/produce_songs.py" "$DATA/${pair%%:*}" "$DATA/${pair##*:}" --seed 7
done
