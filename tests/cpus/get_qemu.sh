#!/usr/bin/env bash
# Put qemu-x86_64 (qemu-user >= 8) at $1, for the cross-CPU test (tests/cpus/test_same_bits.py).
# One on PATH that is new enough is linked; otherwise Debian 13's qemu-user package, whose binaries
# are static, is fetched and verified by apt itself (the archive's signature) through a private
# apt configuration, and only qemu-x86_64 is unpacked: the system's packages and sources are left
# as they are. Debian 12's qemu-user (7.2) will not do: it crashes in torch's AVX2 resampling
# kernel (masked gathers), which the augmentation uses.
set -euo pipefail
dest=$1
new_enough() { "$1" --version 2>/dev/null | awk '/version/ {split($3, v, "."); exit !(v[1] >= 8)}'; }
if found=$(command -v qemu-x86_64) && new_enough "$found"; then
  ln -sf "$found" "$dest"
  exit 0
fi
command -v apt-get >/dev/null || { echo "get_qemu: need qemu-user >= 8 on PATH, or apt-get to fetch Debian's" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$tmp/sources.list"
touch "$tmp/status"
apt=(-q -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "Dir::State::status=$tmp/status"
     -o Debug::NoLocking=1 -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update >/dev/null
(cd "$tmp" && apt-get "${apt[@]}" download qemu-user >/dev/null)
dpkg-deb --fsys-tarfile "$tmp"/qemu-user_*.deb | tar -x -C "$tmp" ./usr/bin/qemu-x86_64
install -m 755 "$tmp/usr/bin/qemu-x86_64" "$dest"
new_enough "$dest"
echo "get_qemu: $("$dest" --version | head -1) at $dest"
