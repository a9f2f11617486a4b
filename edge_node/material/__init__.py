"""Ground-truth audio for tests, benchmarks and training: MIDI we generate, rendered with fluidsynth.

The MIDI is the ground truth. ``midi`` makes the material (scales, chords, melodies, accented pieces,
velocity ramps, tempo changes) from a seed; ``render`` turns it into 48 kHz audio with a General MIDI
soundfont; ``sets`` names the tuning and held-out collections (different soundfonts *and* material
families, so held-out numbers are never tuned on).
"""
