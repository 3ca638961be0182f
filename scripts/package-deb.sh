#!/usr/bin/env bash
# Builds the Debian package: target/debian/ovs-port-agent_<version>_amd64.deb.
# The files are staged by scripts/install (the same layout as a non-Debian install), then
# packed by cargo-deb (pinned below, installed from crates.io if absent) with the maintainer
# scripts of packaging/debian/.
#
# Usage: scripts/package-deb.sh [--binary FILE] [--fast]
#   --binary FILE   package this build of the program (the tests pass theirs, to avoid a
#                   second build); default: cargo build --release, target/release/ovs-port-agent
#   --fast          faster, larger compression
#   --tools-only    only install the pinned cargo-deb (the test set-up does, before the suite)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb_version=3.8.0
binary=
fast=()
tools_only=no
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --fast) fast=(--fast); shift ;;
    --tools-only) tools_only=yes; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/package-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$cargo_deb_version" ]; then
  cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi
[ "$tools_only" = yes ] && exit 0
if [ -z "$binary" ]; then
  cargo build --release --locked --bin ovs-port-agent
  binary=target/release/ovs-port-agent
fi

rm -rf target/deb-stage
DESTDIR="$PWD/target/deb-stage" bash scripts/install --binary "$binary" >/dev/null
# As dh_strip does: the package carries no debug symbols (a debug build is 110 MB with them).
strip --strip-unneeded target/deb-stage/usr/bin/ovs-port-agent
mkdir -p target/debian
# Every file comes from the stage (Cargo.toml's assets), so nothing is built here.
deb=$(cargo deb --no-build --locked "${fast[@]}" --output target/debian/)
echo "$deb"
