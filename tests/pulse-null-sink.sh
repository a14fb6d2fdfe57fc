#!/usr/bin/env bash
# Start or stop a private PulseAudio daemon whose default sink is a null sink
# "xs" (24 kHz mono float32) and whose default source is that sink's monitor,
# so PortAudio (through ALSA's pulse plugin) has a real device without a sound
# card. Used by .ci/run and by the test fixtures (tests/pulse.py).
#
#   tests/pulse-null-sink.sh start DIR   # prints the exports to use
#   tests/pulse-null-sink.sh stop DIR
#
# A keep-alive stream and a suspend/resume cycle make the idle sink render in
# small blocks; without them the first capture callback comes ~2 s late
# (../shared/FACTS.md, "Audio without hardware").
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?runtime directory}
export XDG_RUNTIME_DIR=$dir PULSE_SERVER=unix:$dir/pulse/native

case $cmd in
start)
    mkdir -p -m 700 "$dir"
    pulseaudio --daemonize=yes --system=false -n --exit-idle-time=-1 --disallow-exit \
        --use-pid-file=yes --log-target=file:"$dir/pulse.log" \
        --load="module-native-protocol-unix auth-anonymous=1" \
        --load="module-null-sink sink_name=xs rate=24000 channels=1 format=float32le" \
        </dev/null >/dev/null 2>&1
    for _ in $(seq 100); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
    pactl info >/dev/null 2>&1 || { echo "pulseaudio did not start; see $dir/pulse.log" >&2; exit 1; }
    pactl set-default-sink xs
    pactl set-default-source xs.monitor
    pacat --playback --latency-msec=20 --device=xs --raw --format=float32le \
        --rate=24000 --channels=1 </dev/zero >/dev/null 2>&1 &
    echo $! >"$dir/keepalive.pid"
    for _ in $(seq 50); do [ -n "$(pactl list short sink-inputs)" ] && break; sleep 0.1; done
    pactl suspend-sink xs 1
    pactl suspend-sink xs 0
    echo "export XDG_RUNTIME_DIR=$dir PULSE_SERVER=unix:$dir/pulse/native"
    ;;
stop)
    [ -f "$dir/keepalive.pid" ] && kill "$(cat "$dir/keepalive.pid")" 2>/dev/null || true
    [ -f "$dir/pulse/pid" ] && kill -TERM "$(cat "$dir/pulse/pid")" 2>/dev/null || true
    rm -f "$dir/keepalive.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
