#!/usr/bin/env bash
# Build the Debian packages: packaging/build-debs.sh [amd64] [arm64] [armhf]
# (default: all three). Writes target/debian/pimainteno_<version>_<arch>.deb,
# runs lintian on each (errors fail the build; warnings are explained in
# packaging/README.md) and checks what each binary was built for.
#
# Needs (Debian 12): cargo-deb, lintian, libsystemd-dev, and for the Pi
# packages gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf, the rustup targets
# aarch64-unknown-linux-gnu / armv7-unknown-linux-gnueabihf (.cargo/config.toml
# names the linkers) and the target's libsystemd-dev:ARCH + pkgconf:ARCH
# (multiarch; pm-onfailure links libsystemd, see packaging/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every binary the package ships (cargo-deb's assets in Cargo.toml): the
# architecture checks, the armhf LFS check and the size report go over these.
bins=(pm-summarize pimainteno pimainteno-system-generator pm-onfailure pm-patch pm-dashboard pm-sandbox)

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

# Debian's multiarch triplet (the cross gcc's and pkg-config's prefix).
gnu_triplet() {
	case "$1" in
	amd64) echo x86_64-linux-gnu ;;
	arm64) echo aarch64-linux-gnu ;;
	armhf) echo arm-linux-gnueabihf ;;
	esac
}

# libsystemd (journal reading in pm-onfailure) must be there for the target
# architecture, with a pkg-config that looks at that architecture's libraries
# only (.cargo/config.toml: PKG_CONFIG_<triple>). Checked before building so
# that a missing package is one clear line, not a libsystemd-sys panic. The
# build machine's own (amd64) is always needed: gen-assets links the crate.
check_libsystemd() {
	local arch=$1 gt pc install
	gt=$(gnu_triplet "$arch")
	if [ "$arch" = amd64 ]; then
		pc=pkg-config
		install="apt-get install libsystemd-dev pkg-config"
		if ! dpkg-query -W -f '${db:Status-Abbrev}' libsystemd-dev:amd64 2>/dev/null | grep -q '^ii'; then
			echo "amd64: libsystemd-dev is not installed (pm-onfailure links libsystemd); run: $install" >&2
			exit 1
		fi
	else
		pc=$gt-pkg-config
		install="dpkg --add-architecture $arch && apt-get update && apt-get install libsystemd-dev:$arch pkgconf:$arch"
		if ! dpkg-query -W -f '${db:Status-Abbrev}' "libsystemd-dev:$arch" 2>/dev/null | grep -q '^ii'; then
			echo "$arch: libsystemd-dev:$arch is not installed (pm-onfailure links the target's libsystemd); run: $install" >&2
			echo "  (if apt says e.g. liblzma5:$arch \"is not installable\": packaging/README.md, \"libsystemd\")" >&2
			exit 1
		fi
	fi
	if ! command -v "$pc" >/dev/null; then
		echo "$arch: $pc is missing (pkg-config for the target's libraries); run: $install" >&2
		exit 1
	fi
	if ! "$pc" --exists libsystemd; then
		echo "$arch: $pc does not find libsystemd ($pc --exists libsystemd fails); run: $install" >&2
		exit 1
	fi
}

for arch in amd64 "${arches[@]}"; do
	triple "$arch" >/dev/null
	check_libsystemd "$arch"
done

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
	for b in "${bins[@]}"; do
		[ -f "$bindir/$b" ] ||
			{ echo "$arch: $bindir/$b was not built (a [[bin]] in Cargo.toml, and in the deb assets?)" >&2; exit 1; }
	done

	# The right machine code: ARMv7 (not v6) for armhf, AArch64 for arm64.
	case "$arch" in
	armhf)
		readelf -A "$bindir/pm-summarize" | grep -q "Tag_CPU_arch: v7" ||
			{ echo "armhf: pm-summarize is not ARMv7 code" >&2; exit 1; }
		# 64-bit file offsets in the C code too (.cargo/config.toml CFLAGS).
		# (`open` itself is left out: getrandom's /dev/urandom fallback calls
		# it, harmlessly; see packaging/README.md.)
		for b in "${bins[@]}"; do
			syms=$(readelf --dyn-syms -W "$bindir/$b")
			# pm-dashboard: the libsystemd crate's socket activation fstat()s
			# the socket systemd passed, through nix, whose fstat is the 32-bit
			# one. A socket's inode number is 32-bit and its size 0: nothing
			# can overflow. (Parsing $LISTEN_FDS without the crate would end it.)
			[ "$b" != pm-dashboard ] || syms=$(grep -v ' fstat@' <<<"$syms")
			# pm-sandbox: the landlock crate fstat()s each rule's directory to
			# tell a file from a directory (st_mode only). On armhf that is
			# the 32-bit fstat: an inode number over 32 bits (btrfs) would
			# make it fail with EOVERFLOW, the rule with it, and pm-sandbox
			# refuse to run the check: it fails closed. ext4 (the Pi's SD
			# card) has 32-bit inode numbers.
			[ "$b" != pm-sandbox ] || syms=$(grep -v ' fstat@' <<<"$syms")
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
	for b in "${bins[@]}"; do
		printf '  %-30s %9s bytes\n' "$b" "$(stat -c %s "$bindir/$b")"
	done
done
