#!/usr/bin/env bash
# Regenerates the test utterances: espeak-ng speech, 16 kHz mono PCM16,
# 0.3 s of leading and 1.0 s of trailing silence. Needs espeak-ng and sox (Debian).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p speech
while IFS='|' read -r id voice text; do
  [ -n "$id" ] || continue
  espeak-ng -v "$voice" -s 160 -w "/tmp/voxray-$id.wav" "$text"
  sox "/tmp/voxray-$id.wav" -r 16000 -c 1 -b 16 "speech/$id.wav" pad 0.3 1.0
  rm -f "/tmp/voxray-$id.wav"
done < sentences.txt
