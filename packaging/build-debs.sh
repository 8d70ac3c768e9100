#!/usr/bin/env bash
# Build the Debian packages: packaging/build-debs.sh [amd64] [arm64] [armhf]
# (default: all three). Writes target/debian/pimainteno_<version>_<arch>.deb,
# runs lintian on each (errors fail the build; warnings are explained in
# packaging/README.md) and checks what each binary was built for.
#
# Needs (Debian 12): cargo-deb, lintian, and for the Pi packages
# gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf plus the rustup targets
# aarch64-unknown-linux-gnu / armv7-unknown-linux-gnueabihf (.cargo/config.toml
# names the linkers).
set -euo pipefail
cd "$(dirname "$0")/.."

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)

triple() {
	case "$1" in
	amd64) echo x86_64-unknown-linux-gnu ;;
	arm64) echo aarch64-unknown-linux-gnu ;;
	armhf) echo armv7-unknown-linux-gnueabihf ;;
	*)
		echo "unknown architecture $1 (amd64, arm64 or armhf)" >&2
		exit 2
		;;
	esac
}

# Man pages and completions: generated on this machine, whatever the target.
cargo run --quiet --example gen-assets -- target/assets

for arch in "${arches[@]}"; do
	t=$(triple "$arch")
	echo "== $arch ($t)"
	if [ "$arch" = amd64 ]; then
		# The native build, in target/release (shared with `cargo build --release`).
		deb=$(cargo deb --quiet)
		bindir=target/release
	else
		deb=$(cargo deb --quiet --target "$t")
		bindir=target/$t/release
	fi
	echo "$deb"

	# The right machine code: ARMv7 (not v6) for armhf, AArch64 for arm64.
	case "$arch" in
	armhf)
		readelf -A "$bindir/pm-summarize" | grep -q "Tag_CPU_arch: v7" ||
			{ echo "armhf: pm-summarize is not ARMv7 code" >&2; exit 1; }
		# 64-bit file offsets in the C code too (.cargo/config.toml CFLAGS).
		# (`open` itself is left out: getrandom's /dev/urandom fallback calls
		# it, harmlessly; see packaging/README.md.)
		for b in pm-summarize pimainteno pimainteno-system-generator; do
			syms=$(readelf --dyn-syms -W "$bindir/$b")
			if grep -Eq ' (stat|fstat|lstat|fstatat|lseek|ftruncate|mmap|pread|pwrite|readdir|fopen|statfs|statvfs)@' <<<"$syms"; then
				echo "armhf: $b calls 32-bit file functions (stat, lseek...): build the C code with -D_FILE_OFFSET_BITS=64" >&2
				exit 1
			fi
		done
		;;
	arm64)
		readelf -h "$bindir/pm-summarize" | grep -q "AArch64" ||
			{ echo "arm64: pm-summarize is not AArch64 code" >&2; exit 1; }
		;;
	esac

	# lintian exits non-zero on errors only (its default --fail-on=error).
	lintian --fail-on error "$deb"
	printf '%s: %s bytes\n' "$(basename "$deb")" "$(stat -c %s "$deb")"
	for b in pm-summarize pimainteno pimainteno-system-generator; do
		printf '  %-30s %9s bytes\n' "$b" "$(stat -c %s "$bindir/$b")"
	done
done
