# Run by busybox sh as the image's CMD. Prints "layered ok" only when the
# whiteout worked (gone.txt absent), the lower layers are intact (kept.txt and
# the bulk files present) and the applet symlinks resolve.
set -e
test ! -e /data/gone.txt
test "$(/bin/cat /data/kept.txt)" = "kept"
test -n "$(/bin/ls /bulk)"
echo "layered ok"
