#!/usr/bin/env bash
# Makes sure DIR is on Btrfs for development: when it is not, a loop-backed Btrfs image under
# the project (.dev/btrfs.img, sparse, 2 GiB) is created and mounted at DIR.
# Usage: scripts/dev-btrfs.sh DIR
set -euo pipefail
dir=${1:?usage: dev-btrfs.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
image=$root/.dev/btrfs.img
mkdir -p "$dir"
if [ "$(stat -f -c %T "$dir")" = "btrfs" ]; then
  exit 0
fi
if [ ! -f "$image" ]; then
  truncate -s 2G "$image"
  mkfs.btrfs -q "$image"
fi
mount -o loop "$image" "$dir"
echo "mounted development Btrfs $image at $dir"
