#!/usr/bin/env bash
# PiMainteno system tests: the real package in a real systemd.
#
#     tests/system/run.sh          (as root, on Debian 12; README "System tests")
#
# Builds the amd64, arm64 and armhf packages (packaging/build-debs.sh), boots
# Debian bookworm in a container (debootstrap'd once, cached under
# target/systest/, booted with systemd-nspawn) and checks what a user would:
#   1. offline install; units present and disabled; check-config, verify, security
#   2. a git project summarized by pimainteno.service with the offline provider;
#      journalctl PM_PROJECT=<name>; the second run is a cache hit
#   3. the same with the openai provider against a mock server on the host
#   3b. the codex provider: the real codex CLI (npm) under pimainteno.service,
#      its sandbox reading the project, the key as a credential, the
#      exposure with and without codex's drop-in, a broken sandbox reported
#   4. the cron schedule in `systemctl show pimainteno.timer -p TimersCalendar`;
#      a disabled scheduler; a bad configuration
#   7. pm-onfailure: watch/unwatch, a failing unit recorded with its journal,
#      diagnosed and restarted once; 203/EXEC by the analyzer; the openai
#      diagnosis and its cache; a failure storm within max_repairs_per_hour;
#      time to repair (median of 20); the units' exposure
#  7f. repair under faults: a unit failing after each restart, a slow LLM,
#      forged journal lines, harmless lines, a broken store five ways,
#      clock steps (libfaketime), watch names, a storm and its CPU cost
#   8. pm-patch: a crashing unit of a project whose check fails: pm-onfailure
#      hands it over, pimainteno-patch@ commits the mock's fix on a branch;
#      8b. the real codex CLI makes the fix in the worktree
#   9. pm-dashboard: the socket starts it, it exits when idle, a crash loop
#      leaves the socket working, off loopback it refuses without a password
#      and asks for one with it; the cold-start benchmark against a floor
#   5. upgrade keeps store and configuration; remove keeps the store; purge
#      removes it and the user; no unit is left failed
#   6. the arm64 and armhf binaries under qemu-user; the armhf package refuses
#      an ARMv6 CPU. With PM_SYSTEST_ARM64_BOOT=1 also a full arm64 boot under
#      emulation (30 s more; 4 minutes the first time; not in CI).
#
# Environment: PM_SYSTEST_KEEP=1 keeps the work directory (container root,
# console log); PM_SYSTEST_MIRROR overrides the Debian mirror for debootstrap.
# PM_SYSTEST_SCENARIOS="9 7" runs only these scenarios (in the file's order)
# besides 1 and 2, which the others build on (3b needs 3, 8b needs 3b); without
# 6 only the amd64 package is built. Unset (CI): all of them.
#
# The container is always powered off at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=$ROOT/target/systest
MIRROR=${PM_SYSTEST_MIRROR:-http://deb.debian.org/debian}
# git: scenario 2 creates a project; man-db: `systemd-analyze verify` checks
# that the units' Documentation= man pages exist; nodejs: the codex CLI's
# launcher (scenario 3b); python3-minimal: scenario 7's service that dies
# with a Python traceback;
# bubblewrap: the package depends on it (pm-patch's containment); a user's
# `apt install` fetches it, the offline install here finds it.
INCLUDE=systemd,systemd-sysv,dbus,git,man-db,nodejs,python3-minimal,bubblewrap
ROOTFS_KEY="bookworm minbase $INCLUDE v1"
START=$(date +%s)
# The codex CLI of scenario 3b: the version the transcripts in
# tests/fixtures/codex-exec/ were recorded with; npm-installed on the host.
CODEX_VERSION=0.169.0
CODEX_NPM=$CACHE/codex-$CODEX_VERSION
# logging::message_id::CODEX_SANDBOX
SANDBOX_MESSAGE_ID=$(sed -n 's/.*CODEX_SANDBOX: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)

PASSED=0
FAILED=0
NSPAWN_PID=
CT_PID=
MOCK_PIDS=
WORK=

say() { printf '%s\n' "$*"; }
section() { printf '\n=== %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }
ok() {
	PASSED=$((PASSED + 1))
	say "ok - $*"
}
not_ok() {
	FAILED=$((FAILED + 1))
	say "FAIL - $*"
}
die() {
	say "FATAL - $*" >&2
	FAILED=$((FAILED + 1))
	exit 1
}

# check DESCRIPTION COMMAND...: passes when the command exits 0.
check() {
	local what=$1
	shift
	local out
	if out=$("$@" 2>&1); then
		ok "$what"
	else
		not_ok "$what"
		printf '%s\n' "$out" | sed 's/^/    | /' | tail -20
	fi
}
# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: expected '$2', got '$3'"; fi
}
# expect_in DESCRIPTION NEEDLE HAYSTACK
expect_in() {
	case "$3" in
	*"$2"*) ok "$1" ;;
	*)
		not_ok "$1: '$2' not in:"
		printf '%s\n' "$3" | sed 's/^/    | /' | tail -20
		;;
	esac
}

# expect_not_in DESCRIPTION NEEDLE HAYSTACK
expect_not_in() {
	case "$3" in
	*"$2"*)
		not_ok "$1: '$2' in:"
		printf '%s\n' "$3" | sed 's/^/    | /' | tail -20
		;;
	*) ok "$1" ;;
	esac
}

# The overall exposure of a unit in the container (`systemd-analyze security`).
exposure() {
	ct systemd-analyze security --no-pager "$1" | sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p"
}
# The exposure README.md states for pimainteno.service, in the row whose
# first cell holds WORDS ("Hardening" table).
readme_exposure() {
	grep -F "| \`pimainteno.service\` $1" README.md | awk -F'|' '{print $3}' | awk '{print $1}'
}

# expect_cache_hit DESCRIPTION: the last pimainteno.service run did not
# summarize again: no summary written and no LLM call for the project in its
# journal (a cache hit is logged at debug level only; the same query finds
# the events of a run that did summarize, see scenario 2).
expect_cache_hit() {
	local events
	events=$(invocation_journal pimainteno.service PM_PROJECT=weather |
		python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        e = json.loads(line)
        print(e.get("PM_EVENT", ""), e.get("PM_OUTCOME", ""))')
	expect_eq "$1" success "$(ct systemctl show -p Result --value pimainteno.service)"
	case "$events" in
	*"summary summarized"* | *llm_call*) not_ok "$1: the run summarized again: $events" ;;
	*) ok "$1: no new summary, no LLM call" ;;
	esac
}

# want N: scenario N is selected (PM_SYSTEST_SCENARIOS, default all).
want() {
	[ -z "${PM_SYSTEST_SCENARIOS:-}" ] || [[ " $PM_SYSTEST_SCENARIOS " == *" $1 "* ]]
}

# ---------------------------------------------------------------- container

# Run a command inside the booted container (all its namespaces), with a
# clean environment: what an administrator's root shell there would have.
ct() {
	nsenter -t "$CT_PID" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
# The container's root directory seen from the host.
ct_root() { printf '/proc/%s/root' "$CT_PID"; }

# The cached pristine root file system for an architecture.
rootfs() {
	local arch=$1 dir=$CACHE/rootfs-bookworm-$1
	if [ -f "$dir/.pm-systest" ] && [ "$(cat "$dir/.pm-systest")" = "$ROOTFS_KEY" ]; then
		printf '%s' "$dir"
		return
	fi
	say "debootstrap bookworm ($arch) into $dir (cached for later runs)" >&2
	rm -rf "$dir" "$dir.tmp"
	mkdir -p "$CACHE"
	if ! debootstrap --arch="$arch" --variant=minbase --include="$INCLUDE" \
		bookworm "$dir.tmp" "$MIRROR" >"$CACHE/debootstrap-$arch.log" 2>&1; then
		tail -20 "$CACHE/debootstrap-$arch.log" >&2
		die "debootstrap failed (log: $CACHE/debootstrap-$arch.log)"
	fi
	# No apt lists, no downloads: the package must install offline.
	rm -rf "$dir.tmp"/var/lib/apt/lists/*_Packages "$dir.tmp"/var/cache/apt/archives/*.deb
	printf '%s' "$ROOTFS_KEY" >"$dir.tmp/.pm-systest"
	mv "$dir.tmp" "$dir"
	printf '%s' "$dir"
}

# boot ROOTFS [PREPARE]: a fresh copy of ROOTFS booted; sets CT_PID.
# PREPARE, a function, may change the copy before it boots.
boot() {
	local pristine=$1 prepare=${2:-}
	rm -rf "$WORK/rootfs"
	cp -a "$pristine" "$WORK/rootfs"
	[ -z "$prepare" ] || "$prepare" "$WORK/rootfs"
	# The machine ID is made up at each boot; an empty file keeps it transient.
	: >"$WORK/rootfs/etc/machine-id"
	# No private network: the container shares the host's loopback, where
	# scenario 3's mock LLM listens. Not registered with machined (there may
	# be none) and kept in the caller's scope.
	systemd-nspawn --register=no --keep-unit --console=passive --quiet \
		-M pmtest -D "$WORK/rootfs" -b >"$WORK/console.log" 2>&1 &
	NSPAWN_PID=$!
	local i
	for i in $(seq 1 100); do
		CT_PID=$( (ps --ppid "$NSPAWN_PID" -o pid= || true) | head -1 | tr -d ' ')
		[ -n "$CT_PID" ] && [ "$(cat "/proc/$CT_PID/comm" 2>/dev/null)" = systemd ] && break
		CT_PID=
		kill -0 "$NSPAWN_PID" 2>/dev/null || break
		sleep 0.2
	done
	[ -n "$CT_PID" ] || {
		tail -20 "$WORK/console.log" >&2
		die "the container did not start (console: $WORK/console.log)"
	}
	local state=
	for i in $(seq 1 ${BOOT_TIMEOUT:-120}); do
		state=$(ct timeout 5 systemctl is-system-running 2>/dev/null || true)
		case "$state" in running | degraded) break ;; esac
		sleep 1
	done
	if [ "$state" != running ]; then
		ct systemctl --failed --no-pager >&2 || true
		die "the container did not finish booting: '$state' (console: $WORK/console.log)"
	fi
	ok "container booted (systemd PID $CT_PID), system state: running"
}

# Power the container off (SIGRTMIN+4 to its systemd = poweroff), wait,
# kill it if it hangs. Safe to call twice.
poweroff() {
	[ -n "$NSPAWN_PID" ] || return 0
	if kill -0 "$NSPAWN_PID" 2>/dev/null; then
		# Ask its systemd to power off; failing that, SIGRTMIN+4 does the same
		# (but not under qemu-user, which renumbers real-time signals); without
		# a systemd yet, nspawn asks the container to halt on SIGTERM.
		if [ -n "$CT_PID" ]; then
			timeout 20 nsenter -t "$CT_PID" -a systemctl poweroff --no-block >/dev/null 2>&1 ||
				kill -s RTMIN+4 "$CT_PID" 2>/dev/null || true
		else
			kill -TERM "$NSPAWN_PID" 2>/dev/null || true
		fi
		local i limit=${POWEROFF_TIMEOUT:-60}
		for i in $(seq 1 $((limit * 2))); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$NSPAWN_PID" 2>/dev/null; then
			say "container did not power off in $limit s: killing it" >&2
			kill -KILL "$NSPAWN_PID" 2>/dev/null || true
			[ -n "$CT_PID" ] && kill -KILL "$CT_PID" 2>/dev/null || true
		fi
	fi
	wait "$NSPAWN_PID" 2>/dev/null || true
	say "container powered off"
	NSPAWN_PID=
	CT_PID=
}

cleanup() {
	local rc=$?
	set +e
	if [ "$rc" -ne 0 ] && [ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null; then
		say "--- diagnostics: failed units and the last journal lines in the container"
		ct systemctl --failed --no-pager 2>&1 | sed 's/^/    | /' || true
		ct journalctl -b --no-pager -n 40 2>&1 | sed 's/^/    | /' || true
	fi
	poweroff
	for pid in $MOCK_PIDS; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "$WORK" ] && [ -z "${PM_SYSTEST_KEEP:-}" ]; then
		rm -rf "$WORK"
	elif [ -n "$WORK" ]; then
		say "work directory kept: $WORK"
	fi
	say ""
	say "system tests: $(($(date +%s) - START)) s"
	say "$PASSED passed, $FAILED failed"
	if [ "$FAILED" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# set -e stops at a failing command: say which one.
trap 'say "FATAL - line $LINENO: $BASH_COMMAND failed"' ERR

# start_mock NAME: tests/system/mock_openai.py on the host's loopback,
# logging to $WORK/NAME.log; sets MOCK_PORT. Stopped by cleanup.
start_mock() {
	python3 tests/system/mock_openai.py "$WORK/$1.port" "$WORK/$1.log" &
	MOCK_PIDS="$MOCK_PIDS $!"
	local i
	for i in $(seq 1 50); do
		[ -s "$WORK/$1.port" ] && break
		sleep 0.1
	done
	MOCK_PORT=$(cat "$WORK/$1.port" 2>/dev/null) || die "the mock LLM server ($1) did not start"
}

# openai_mock NAME: start_mock NAME, and [llm] provider "openai" pointed at
# it (conf.d/60-openai.toml).
openai_mock() {
	start_mock "$1"
	ct_write /etc/pimainteno/conf.d/60-openai.toml <<EOF
[llm]
provider = "openai"
endpoint = "http://127.0.0.1:$MOCK_PORT/v1"
model = "mock-model"
retries = 0
EOF
}

# handler_run UNIT: the invocation id of pm-onfailure@UNIT.service's last run.
handler_run() { ct systemctl show -p InvocationID --value "pm-onfailure@$1.service"; }
# repair_idle: until nothing is queued for pimainteno-repair.service or
# pimainteno-explain.service and neither runs (seen twice in a row).
repair_idle() {
	local i calm=0
	for i in $(seq 1 600); do
		if ct sh -c 'find /run/pimainteno/queue /run/pimainteno/explain -type f 2>/dev/null | grep -q . && exit 1
			for u in pimainteno-repair.service pimainteno-explain.service; do
				case $(systemctl is-active $u) in activating|deactivating|active|reloading) exit 1;; esac
			done'; then
			calm=$((calm + 1))
			[ "$calm" -ge 2 ] && return 0
		else
			calm=0
		fi
		sleep 0.2
	done
	say "    (timed out waiting for the repair and explain units to finish)"
}
# wait_handler UNIT BEFORE: until pm-onfailure@UNIT.service has run since the
# run BEFORE (handler_run's value before the failure), and the failure it
# queued has been repaired and explained.
wait_handler() {
	local h="pm-onfailure@$1.service" i state id
	for i in $(seq 1 150); do
		id=$(handler_run "$1")
		state=$(ct systemctl show -p ActiveState --value "$h")
		if [ -n "$id" ] && [ "$id" != "$2" ] && { [ "$state" = inactive ] || [ "$state" = failed ]; }; then
			repair_idle
			return 0
		fi
		sleep 0.2
	done
	say "    (timed out waiting for $h: $state)"
}

# Write stdin to a file inside the container.
ct_write() { ct sh -c "cat > '$1'"; }

# codex_config FILE PORT [LINE]: a configuration fragment for the codex
# provider whose model is the mock's Responses API on PORT, with LINE added
# to [llm].
codex_config() {
	ct_write "$1" <<EOF
[llm]
provider = "codex"
model = "gpt-5.5"
timeout = "2m"
${3:-}
args = ["-c", "model_provider=mock", "-c", "model_providers.mock.name=Mock",
        "-c", 'model_providers.mock.base_url="http://127.0.0.1:$2/v1"',
        "-c", "model_providers.mock.env_key=CODEX_API_KEY",
        "-c", "model_providers.mock.wire_api=responses"]
EOF
}

# The journal entries of one invocation of a unit, as JSON lines, for a field match.
invocation_journal() {
	local unit=$1 field=$2 id
	id=$(ct systemctl show -p InvocationID --value "$unit")
	ct journalctl --no-pager -o json "_SYSTEMD_INVOCATION_ID=$id" "$field"
}
# Values of one field in JSON journal lines on stdin, one per line.
field_values() {
	python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line:
        print(json.loads(line).get(sys.argv[1], ""))' "$1"
}

# ---------------------------------------------------------------- preflight

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, systemd-nspawn and nsenter need it)"
for tool in debootstrap systemd-nspawn nsenter cargo-deb lintian python3 qemu-aarch64-static qemu-arm-static update-binfmts npm curl openssl; do
	command -v "$tool" >/dev/null ||
		die "$tool is missing; install: apt-get install debootstrap systemd-container lintian python3 qemu-user-static binfmt-support curl openssl (and wrk, for scenario 9's warm requests/s), cargo install --locked cargo-deb, and Node.js with npm"
done
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/run.XXXXXX")

# ---------------------------------------------------------------- packages

section "build the packages"
ARCHES=(amd64)
! want 6 || ARCHES+=(arm64 armhf)
packaging/build-debs.sh "${ARCHES[@]}" 2>&1 | tee "$WORK/build.log" | grep -v '^running with root' ||
	die "building the packages failed (log: $WORK/build.log)"
# The floor of scenario 9's benchmark (examples/floor-responder.rs).
cargo build --quiet --release --example floor-responder ||
	die "building examples/floor-responder.rs failed"
VERSION=$(cargo metadata --no-deps --format-version 1 |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
# Copied away: cargo-deb deletes older packages of the same architecture
# from target/debian/ when it writes a new one (the upgrade below).
mkdir -p "$WORK/debs" "$WORK/upgrade"
for arch in "${ARCHES[@]}"; do
	cp "$ROOT/target/debian/pimainteno_${VERSION}-1_$arch.deb" "$WORK/debs/" ||
		die "missing target/debian/pimainteno_${VERSION}-1_$arch.deb"
done
DEB_AMD64=$WORK/debs/pimainteno_${VERSION}-1_amd64.deb
DEB_ARM64=$WORK/debs/pimainteno_${VERSION}-1_arm64.deb
DEB_ARMHF=$WORK/debs/pimainteno_${VERSION}-1_armhf.deb
ok "packages built, lintian without errors"
# A later version of the same package, for the upgrade in scenario 5.
cargo deb --quiet --no-build --deb-version "${VERSION}-2" -o "$WORK/upgrade/" >/dev/null
cargo deb --quiet --no-build >/dev/null # put target/debian/*_amd64.deb back
DEB_UPGRADE=$(ls "$WORK"/upgrade/*.deb)

if want 3b; then
section "the codex CLI $CODEX_VERSION (npm)"
if [ ! -x "$CODEX_NPM/node_modules/.bin/codex" ]; then
	rm -rf "$CODEX_NPM.tmp"
	npm install --prefix "$CODEX_NPM.tmp" --no-fund --no-audit --loglevel=error \
		"@openai/codex@$CODEX_VERSION" >"$CACHE/npm-codex.log" 2>&1 ||
		die "npm install @openai/codex@$CODEX_VERSION failed (log: $CACHE/npm-codex.log)"
	mv "$CODEX_NPM.tmp" "$CODEX_NPM"
fi
ok "codex $CODEX_VERSION in $CODEX_NPM (cached for later runs)"
fi

# ---------------------------------------------------------------- 6. Pi binaries under qemu-user
if want 6; then

section "6. the arm64 and armhf binaries under qemu-user"
# binfmt_misc lets the kernel run foreign binaries through qemu directly.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
update-binfmts --enable qemu-arm >/dev/null 2>&1 || true
check "binfmt_misc runs aarch64 binaries through qemu" grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64
check "binfmt_misc runs arm binaries through qemu" grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-arm
for arch in arm64 armhf; do
	deb=$DEB_ARM64
	prefix=/usr/aarch64-linux-gnu
	if [ "$arch" = armhf ]; then
		deb=$DEB_ARMHF
		prefix=/usr/arm-linux-gnueabihf
	fi
	x=$WORK/$arch
	dpkg-deb -x "$deb" "$x"
	# The target's dynamic loader and libc come from Debian's cross libc6.
	for b in usr/bin/pm-summarize usr/bin/pimainteno usr/lib/systemd/system-generators/pimainteno-system-generator; do
		out=$(QEMU_LD_PREFIX=$prefix "$x/$b" --version 2>&1 || true)
		expect_eq "$arch: $(basename "$b") --version" "$(basename "$b") $VERSION" "$out"
	done
	out=$(QEMU_LD_PREFIX=$prefix "$x/usr/bin/pimainteno" --config "$x/etc/pimainteno/pimainteno.toml" check-config 2>&1) &&
		ok "$arch: pimainteno check-config on the shipped configuration" ||
		not_ok "$arch: check-config: $out"
	mkdir -p "$WORK/$arch-gen"
	PIMAINTENO_CONFIG=$x/etc/pimainteno/pimainteno.toml QEMU_LD_PREFIX=$prefix \
		"$x/usr/lib/systemd/system-generators/pimainteno-system-generator" "$WORK/$arch-gen" 2>/dev/null
	check "$arch: the generator writes the timer drop-in" \
		grep -qx 'OnCalendar=\*-\*-\* 03:00:00' "$WORK/$arch-gen/pimainteno.timer.d/50-pimainteno-config.conf"
done
check "armhf: the binaries are ARMv7 code" sh -c "readelf -A '$WORK/armhf/usr/bin/pm-summarize' | grep -q 'Tag_CPU_arch: v7$'"
check "armhf: hard-float ABI" sh -c "readelf -h '$WORK/armhf/usr/bin/pm-summarize' | grep -q 'hard-float'"
fi

# ---------------------------------------------------------------- container

section "boot Debian bookworm (amd64) with systemd-nspawn"
PRISTINE=$(rootfs amd64)
BOOT_TIMEOUT=120 boot "$PRISTINE"
host_net=$(readlink /proc/self/ns/net)
expect_eq "the container shares the host's network namespace (loopback)" "$host_net" "$(readlink "/proc/$CT_PID/ns/net")"
mkdir -p "$(ct_root)/root/debs"
cp "$DEB_AMD64" "$DEB_UPGRADE" "$(ct_root)/root/debs/"
! want 6 || cp "$DEB_ARMHF" "$(ct_root)/root/debs/"
# apt with no package sources at all: anything it had to download would fail.
mkdir -p "$(ct_root)/root/no-sources.d"
: >"$(ct_root)/root/no-sources.list"
APT=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dir::Etc::sourcelist=/root/no-sources.list
	-o Dir::Etc::sourceparts=/root/no-sources.d -o APT::Install-Recommends=false)

if want 6; then
section "6b. the armhf package refuses an ARMv6 CPU"
mkdir -p "$(ct_root)/root/armv6"
printf '#!/bin/sh\n[ "$1" = -m ] && echo armv6l || /bin/uname "$@"\n' >"$(ct_root)/root/armv6/uname"
chmod 755 "$(ct_root)/root/armv6/uname"
out=$(ct env PATH=/root/armv6:/usr/sbin:/usr/bin:/sbin:/bin dpkg --force-architecture -i \
	"/root/debs/$(basename "$DEB_ARMHF")" 2>&1) && rc=0 || rc=$?
expect_eq "dpkg -i of the armhf package on an armv6l CPU fails" 1 "$rc"
expect_in "  ... saying why" "ARMv6 (or older) CPU (armv6l)" "$out"
expect_in "  ... in the pre-installation script" "pre-installation script subprocess returned error exit status 1" "$out"
check "  ... and installs nothing" sh -c "! nsenter -t $CT_PID -a test -e /usr/bin/pm-summarize"
ct dpkg --purge pimainteno >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- 1. install

section "1. apt install ./pimainteno_${VERSION}-1_amd64.deb (offline)"
out=$(ct "${APT[@]}" install "/root/debs/$(basename "$DEB_AMD64")" 2>&1) && rc=0 || rc=$?
expect_eq "apt install exits 0 with no package source" 0 "$rc"
[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | tail -20; die "cannot go on without the package"; }
expect_eq "dpkg says installed" "install ok installed" "$(ct dpkg-query -W -f '${Status}' pimainteno)"
for f in /usr/bin/pm-summarize /usr/bin/pimainteno /usr/bin/pm-onfailure /usr/bin/pm-patch /usr/lib/systemd/system-generators/pimainteno-system-generator \
	/usr/lib/systemd/system/pimainteno-patch@.service /usr/share/man/man1/pm-patch.1.gz \
	/usr/lib/systemd/system/pm-onfailure@.service /usr/share/man/man1/pm-onfailure.1.gz \
	/usr/lib/systemd/system/pimainteno-repair.path /usr/lib/systemd/system/pimainteno-repair.service \
	/usr/lib/systemd/system/pimainteno-explain.path /usr/lib/systemd/system/pimainteno-explain.service \
	/usr/lib/systemd/system/pimainteno.service /usr/lib/systemd/system/pimainteno.timer \
	/etc/pimainteno/pimainteno.toml /usr/lib/sysusers.d/pimainteno.conf /usr/lib/tmpfiles.d/pimainteno.conf \
	/usr/share/man/man1/pm-summarize.1.gz /usr/share/man/man8/pimainteno-system-generator.8.gz \
	/usr/share/bash-completion/completions/pimainteno /usr/bin/pm-dashboard /usr/share/man/man1/pm-dashboard.1.gz \
	/usr/lib/systemd/system/pimainteno-dashboard.socket /usr/lib/systemd/system/pimainteno-dashboard.service \
	/usr/lib/pimainteno/pm-sandbox; do
	check "installed: $f" ct test -e "$f"
done
expect_eq "pimainteno-dashboard.socket is disabled" disabled "$(ct systemctl is-enabled pimainteno-dashboard.socket || true)"
expect_eq "  ... and not listening" inactive "$(ct systemctl is-active pimainteno-dashboard.socket || true)"
expect_eq "pimainteno.timer is disabled" disabled "$(ct systemctl is-enabled pimainteno.timer || true)"
expect_eq "pimainteno.timer is not running" inactive "$(ct systemctl is-active pimainteno.timer || true)"
expect_eq "pimainteno.service is static (started by the timer)" static "$(ct systemctl is-enabled pimainteno.service || true)"
check "the pimainteno system user exists" ct getent passwd pimainteno
expect_eq "/var/lib/pimainteno belongs to it" "pimainteno:pimainteno 750" "$(ct stat -c '%U:%G %a' /var/lib/pimainteno)"
check "pimainteno check-config passes on the shipped configuration" ct pimainteno check-config
check "man pm-summarize finds the page" ct man -w pm-summarize
check "systemd-analyze verify pimainteno.service pimainteno.timer is clean" \
	sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify pimainteno.service pimainteno.timer 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
security=$(exposure pimainteno.service)
say "    systemd-analyze security pimainteno.service: $security"
check "pimainteno.service exposure $security <= 2.0" python3 -c "import sys; sys.exit(not (0 < float('$security') <= 2.0))"
expect_eq "  ... the figure in the README" "$(readme_exposure '(provider `none`')" "$security"
expect_in "the generator wrote the default schedule" "OnCalendar=*-*-* 03:00:00" \
	"$(ct systemctl show -p TimersCalendar --value pimainteno.timer)"

# ---------------------------------------------------------------- 2. offline provider

section "2. a project summarized with the offline provider"
ct useradd --create-home --shell /bin/bash pi
ct runuser -u pi -- sh -c 'set -e; cd /home/pi; git init -q -b main weather; cd weather
	printf "# weather\n\nPrints the forecast.\n" > README.md
	printf "#!/bin/sh\necho sunny\n" > forecast.sh
	git add . && git -c user.name=Pi -c user.email=pi@example.invalid commit -qm "first version"'
# The project belongs to pi, and git refuses repositories owned by another
# user ("dubious ownership"): the service runs as pi ([service] user).
ct_write /etc/pimainteno/conf.d/50-weather.toml <<'EOF'
[llm]
provider = "none"

[service]
user = "pi"

[[project]]
name = "weather"
path = "/home/pi/weather"
EOF
# Far away, so that no scheduled run races the manual ones below.
ct_write /etc/pimainteno/conf.d/40-schedule.toml <<'EOF'
[scheduler]
on_calendar = "2099-01-01 00:00:00"
EOF
check "pimainteno check-config accepts the fragments" ct pimainteno check-config
ct systemctl daemon-reload
expect_eq "the generator set User= from [service] user" pi "$(ct systemctl show -p User --value pimainteno.service)"
expect_in "the generator made the project writable" "/home/pi/weather" "$(ct systemctl show -p ReadWritePaths --value pimainteno.service)"
check "systemctl enable --now pimainteno.timer" ct systemctl enable --now pimainteno.timer
expect_eq "the timer is enabled" enabled "$(ct systemctl is-enabled pimainteno.timer || true)"
expect_eq "the timer is active" active "$(ct systemctl is-active pimainteno.timer || true)"
check "systemctl start pimainteno.service (first run)" ct systemctl start pimainteno.service
expect_eq "  ... result" success "$(ct systemctl show -p Result --value pimainteno.service)"
check "  ... wrote /home/pi/weather/codex.md" ct test -s /home/pi/weather/codex.md
expect_eq "  ... owned by pi" pi "$(ct stat -c %U /home/pi/weather/codex.md 2>/dev/null || true)"
expect_in "  ... about the project" "weather" "$(ct cat /home/pi/weather/codex.md 2>/dev/null || true)"
outcomes=$(invocation_journal pimainteno.service PM_PROJECT=weather | field_values PM_OUTCOME)
expect_in "journalctl PM_PROJECT=weather shows the summary event" summarized "$outcomes"
expect_in "  ... as a structured event" "PM_EVENT=summary" "$(ct journalctl --no-pager -o verbose PM_PROJECT=weather PM_EVENT=summary)"
summary_mtime=$(ct stat -c %Y /home/pi/weather/codex.md)
check "systemctl start pimainteno.service (second run)" ct systemctl start pimainteno.service
expect_cache_hit "  ... is a cache hit"
expect_eq "  ... and leaves codex.md alone" "$summary_mtime" "$(ct stat -c %Y /home/pi/weather/codex.md)"
check "pimainteno status" ct pimainteno status

# ---------------------------------------------------------------- 3. openai provider
if want 3; then

section "3. the openai provider against a mock LLM on the host's loopback"
start_mock mock
PORT=$MOCK_PORT
say "    mock LLM on 127.0.0.1:$PORT (a free port chosen by the kernel)"
check "the container reaches the host's 127.0.0.1:$PORT" ct bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
printf 'sk-systest-0042\n' | ct_write /etc/pimainteno/llm-api-key
ct chown root:pi /etc/pimainteno/llm-api-key
ct chmod 640 /etc/pimainteno/llm-api-key
ct_write /etc/pimainteno/conf.d/60-openai.toml <<EOF
[llm]
provider = "openai"
endpoint = "http://127.0.0.1:$PORT/v1"
model = "mock-model"
api_key_file = "/etc/pimainteno/llm-api-key"
retries = 0
EOF
# Someone pasted a connection string and the LLM key into the README: the
# summary's context holds it, redacted (README "What leaves the Pi").
ct runuser -u pi -- sh -c 'cd /home/pi/weather && printf "\nDeploy: postgres://app:Sys7-test-pw@db/weather with key sk-systest-0042\n" >> README.md'
check "systemctl start pimainteno.service (openai)" ct systemctl start pimainteno.service
expect_eq "  ... result" success "$(ct systemctl show -p Result --value pimainteno.service)"
requests=$(grep -c . "$WORK/mock.log" 2>/dev/null || true)
expect_eq "  ... one request to the mock" 1 "$requests"
if [ -s "$WORK/mock.log" ]; then
	req=$(head -1 "$WORK/mock.log")
	expect_in "  ... POST /v1/chat/completions" '"path": "/v1/chat/completions"' "$req"
	expect_in "  ... with the key from api_key_file" '"authorization": "Bearer sk-systest-0042"' "$req"
	expect_in "  ... for the configured model" '"model": "mock-model"' "$req"
	body=$(python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["body"]))' "$req")
	expect_in "  ... the README's deploy line was sent" "Deploy: postgres://app:[secret:" "$body"
	expect_not_in "  ... without its password" "Sys7-test-pw" "$body"
	expect_not_in "  ... nor the LLM key in the prompt" "sk-systest-0042" "$body"
fi
redacted=$(invocation_journal pimainteno.service PM_EVENT=llm_call | field_values PM_REDACTED)
expect_eq "journalctl PM_EVENT=llm_call: PM_REDACTED" 2 "$redacted"
expect_in "  ... PM_REDACTED_KINDS" "url-password=1" \
	"$(invocation_journal pimainteno.service PM_EVENT=llm_call | field_values PM_REDACTED_KINDS)"
prompts=$(ct pimainteno history weather --prompts 2>&1)
expect_in "pimainteno history weather --prompts shows the prompt as sent" "postgres://app:[secret:" "$prompts"
expect_in "  ... and the counts" "redacted: 2 values" "$prompts"
expect_not_in "  ... never the secret" "Sys7-test-pw" "$prompts"
expect_in "  ... codex.md holds the LLM's answer" "MOCK-SUMMARY-7f3a" "$(ct cat /home/pi/weather/codex.md 2>/dev/null || true)"
events=$(invocation_journal pimainteno.service PM_PROJECT=weather | field_values PM_EVENT | sort -u | tr '\n' ' ')
expect_in "journalctl PM_PROJECT=weather: the LLM call" llm_call "$events"
expect_in "  ... and the summary" summary "$events"
check "systemctl start pimainteno.service (openai, second run)" ct systemctl start pimainteno.service
expect_cache_hit "  ... is a cache hit"
expect_eq "  ... without asking the mock again" 1 "$(grep -c . "$WORK/mock.log" || true)"
expect_in "pimainteno history weather lists the LLM call" llm_call "$(ct pimainteno history weather 2>&1)"
fi

# ---------------------------------------------------------------- 3b. codex provider
if want 3b; then

section "3b. the codex provider under pimainteno.service (real codex CLI $CODEX_VERSION)"
# What a user does (README "LLM providers"): the provider, a model, and the
# key as a systemd credential. codex talks to the mock's Responses API; its
# provider reads the key from CODEX_API_KEY, which PiMainteno sets from the
# credential.
start_mock codex-mock
CODEX_PORT=$MOCK_PORT
say "    mock Responses API on 127.0.0.1:$CODEX_PORT"
codex_config /etc/pimainteno/conf.d/70-codex.toml "$CODEX_PORT"
ct rm -f /etc/pimainteno/conf.d/60-openai.toml
expect_in "check-config warns while codex is not installed" \
	"is not found in the PATH pimainteno.service runs with" "$(ct pimainteno check-config 2>&1 >/dev/null || true)"
# `sudo npm install -g @openai/codex` as the README says, done on the host
# (the container has no network of its own): the same files in the same places.
mkdir -p "$(ct_root)/usr/local/lib/node_modules"
cp -a "$CODEX_NPM/node_modules/@openai" "$(ct_root)/usr/local/lib/node_modules/"
ln -s ../lib/node_modules/@openai/codex/bin/codex.js "$(ct_root)/usr/local/bin/codex"
expect_eq "codex --version (Debian's nodejs $(ct node --version))" "codex-cli $CODEX_VERSION" \
	"$(ct env CODEX_HOME=/tmp codex --version 2>/dev/null)"
out=$(ct pimainteno check-config 2>&1 >/dev/null) && rc=0 || rc=$?
expect_eq "check-config passes" 0 "$rc"
expect_not_in "  ... without a warning about codex" codex "$out"
# The key: root's alone, handed over as a credential.
ct chown root:root /etc/pimainteno/llm-api-key
ct chmod 600 /etc/pimainteno/llm-api-key
mkdir -p "$(ct_root)/etc/systemd/system/pimainteno.service.d"
ct_write /etc/systemd/system/pimainteno.service.d/override.conf <<'EOF'
[Service]
LoadCredential=llm-api-key:/etc/pimainteno/llm-api-key
EOF
ct systemctl daemon-reload
CODEX_DROP_IN=/run/systemd/generator/pimainteno.service.d/55-pimainteno-codex.conf
check "the generator wrote codex's drop-in" ct test -f "$CODEX_DROP_IN"
expect_in "  ... systemctl cat shows it" "55-pimainteno-codex.conf" "$(ct systemctl cat pimainteno.service)"
expect_eq "  ... ProcSubset=all" all "$(ct systemctl show -p ProcSubset --value pimainteno.service)"
expect_eq "  ... RestrictNamespaces= allows bubblewrap's namespaces" "ipc net mnt pid user" \
	"$(ct systemctl show -p RestrictNamespaces --value pimainteno.service)"
check "systemd-analyze verify pimainteno.service is clean with it" \
	sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify pimainteno.service 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
codex_security=$(exposure pimainteno.service)
say "    systemd-analyze security pimainteno.service with the codex drop-in: $codex_security"
expect_eq "  ... the figure in the README" "$(readme_exposure 'with provider `codex`')" "$codex_security"
check "  ... at most 2.5" python3 -c "import sys; sys.exit(not (0 < float('$codex_security') <= 2.5))"

check "systemctl start pimainteno.service (codex)" ct systemctl start pimainteno.service
expect_eq "  ... result" success "$(ct systemctl show -p Result --value pimainteno.service)"
expect_in "  ... codex.md holds the model's answer" "MOCK-CODEX-SUMMARY-5c1d" "$(ct cat /home/pi/weather/codex.md 2>/dev/null || true)"
expect_not_in "  ... not marked as written without reading the project" "Warning" "$(ct cat /home/pi/weather/codex.md 2>/dev/null || true)"
codex_requests=$(python3 - "$WORK/codex-mock.log" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    outputs = [str(i.get("output")) for i in r["body"].get("input", []) if i.get("type") == "function_call_output"]
    print(r["path"], r["authorization"], "output:" + json.dumps(outputs))
EOF
)
expect_eq "  ... two requests: the command, then the answer" 2 "$(grep -c '^/v1/responses ' <<<"$codex_requests")"
expect_in "  ... with the key from the credential" "Bearer sk-systest-0042" "$codex_requests"
expect_in "  ... and codex ran \`cat forecast.sh\` in its sandbox: the file reached the model" \
	'echo sunny' "$(sed -n 2p <<<"$codex_requests")"
events=$(invocation_journal pimainteno.service PM_PROJECT=weather | field_values PM_EVENT | sort -u | tr '\n' ' ')
expect_in "  ... the llm_call in the journal" llm_call "$events"
expect_eq "  ... no sandbox warning in the journal" "" \
	"$(ct journalctl --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$(ct systemctl show -p InvocationID --value pimainteno.service)" MESSAGE_ID=$SANDBOX_MESSAGE_ID)"

# Undo one relaxation, as a later drop-in might: the run fails before
# asking the model, and says which setting.
ct_write /etc/systemd/system/pimainteno.service.d/zz-undo.conf <<'EOF'
[Service]
ProcSubset=pid
EOF
ct systemctl daemon-reload
ct runuser -u pi -- sh -c 'cd /home/pi/weather && echo "rain later" >> README.md'
out=$(ct systemctl start pimainteno.service 2>&1) && rc=0 || rc=$?
check "a broken sandbox fails the run" test "$rc" -ne 0
expect_eq "  ... with exit status 69" 69 "$(ct systemctl show -p ExecMainStatus --value pimainteno.service)"
expect_eq "  ... and no model was asked" 2 "$(grep -c . "$WORK/codex-mock.log")"
sandbox_log=$(ct journalctl --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$(ct systemctl show -p InvocationID --value pimainteno.service)" MESSAGE_ID=$SANDBOX_MESSAGE_ID)
expect_in "  ... journalctl MESSAGE_ID=<sandbox> quotes bubblewrap" "bwrap: Can't read /proc/sys/kernel/overflowuid" "$sandbox_log"
expect_in "  ... and names the setting" "Check ProcSubset= in pimainteno.service" "$sandbox_log"
expect_in "pimainteno status shows it" "codex sandbox: FAILING" "$(ct pimainteno status)"
ct rm /etc/systemd/system/pimainteno.service.d/zz-undo.conf
ct systemctl daemon-reload
ct systemctl reset-failed pimainteno.service
check "fixed: the next run summarizes" ct systemctl start pimainteno.service
expect_not_in "  ... and pimainteno status is clean again" "codex sandbox" "$(ct pimainteno status)"

# Back to the offline provider: the relaxations go with codex.
ct rm /etc/pimainteno/conf.d/70-codex.toml /etc/systemd/system/pimainteno.service.d/override.conf
ct systemctl daemon-reload
check "provider none: no codex drop-in" sh -c "! nsenter -t $CT_PID -a test -e $CODEX_DROP_IN"
expect_eq "  ... ProcSubset=pid again" pid "$(ct systemctl show -p ProcSubset --value pimainteno.service)"
expect_eq "  ... the exposure of the shipped unit" "$security" "$(exposure pimainteno.service)"
fi

# ---------------------------------------------------------------- 4. schedule
if want 4; then

section "4. the schedule from cron"
ct_write /etc/pimainteno/conf.d/40-schedule.toml <<'EOF'
[scheduler]
cron = "*/5 * * * *"
randomized_delay = "10s"
EOF
ct systemctl daemon-reload
cal=$(ct systemctl show -p TimersCalendar --value pimainteno.timer)
say "    TimersCalendar: $cal"
expect_in "systemctl show pimainteno.timer -p TimersCalendar" "OnCalendar=*-*-* *:00/5:00" "$cal"
expect_eq "  ... only that schedule" 1 "$(grep -o 'OnCalendar=' <<<"$cal" | wc -l)"
expect_eq "RandomizedDelayUSec" 10s "$(ct systemctl show -p RandomizedDelayUSec --value pimainteno.timer)"
# While the run it just started is active (the reload fell on a 5-minute
# mark), the timer is "running" and has no next elapse: it gets one when
# pimainteno.service ends.
for _ in $(seq 120); do
	next=$(ct systemctl show -p NextElapseUSecRealtime --value pimainteno.timer)
	[ -z "$next" ] || break
	sleep 1
done
check "the timer has a next elapse ($next)" test -n "$next"

# [scheduler] enabled = false: the generator masks the timer. As the README
# says: stop the timer, change the configuration, reload.
ct systemctl stop pimainteno.timer
ct_write /etc/pimainteno/conf.d/45-off.toml <<'EOF'
[scheduler]
enabled = false
EOF
ct systemctl daemon-reload
expect_eq "enabled = false masks pimainteno.timer" masked "$(ct systemctl show -p LoadState --value pimainteno.timer)"
expect_eq "  ... systemctl is-enabled says so" masked-runtime "$(ct systemctl is-enabled pimainteno.timer || true)"
expect_eq "  ... nothing failed" "" "$(ct systemctl --failed --plain --no-legend)"
out=$(ct systemctl start pimainteno.timer 2>&1) && rc=0 || rc=$?
check "  ... so it cannot be started" test "$rc" -ne 0
expect_in "  ... and says so" "masked" "$out"
check "  ... while pimainteno.service still runs by hand" ct systemctl start pimainteno.service
ct rm /etc/pimainteno/conf.d/45-off.toml
ct systemctl daemon-reload
check "enabled again: the timer starts" ct systemctl start pimainteno.timer
expect_eq "  ... and is active" active "$(ct systemctl is-active pimainteno.timer || true)"

# A bad configuration: the generator writes nothing and says why.
ct_write /etc/pimainteno/conf.d/90-bad.toml <<'EOF'
[scheduler]
cron = "99 * * * *"
EOF
ct systemctl daemon-reload
expect_in "a bad cron line: the shipped default schedule" "OnCalendar=*-*-* 03:00:00" \
	"$(ct systemctl show -p TimersCalendar --value pimainteno.timer)"
check "  ... no drop-in written" sh -c "! nsenter -t $CT_PID -a test -e /run/systemd/generator/pimainteno.timer.d"
expect_in "  ... and the reason in the journal" "90-bad.toml:2" \
	"$(ct journalctl --no-pager -t pimainteno-system-generator -o cat)"
expect_in "  ... pimainteno check-config says the same" "minute: 99 is out of range" "$(ct pimainteno check-config 2>&1 || true)"
ct rm /etc/pimainteno/conf.d/90-bad.toml
ct systemctl daemon-reload
expect_in "fixed: the schedule is back" "OnCalendar=*-*-* *:00/5:00" "$(ct systemctl show -p TimersCalendar --value pimainteno.timer)"
fi

# ---------------------------------------------------------------- 7. pm-onfailure
if want 7; then

section "7. pm-onfailure: watched units diagnosed, repaired, recorded"
# No scheduled run in the middle of scenarios 7 and 8 (the cron of scenario
# 4 fires every 5 minutes): it would summarize and patch with their
# providers. Started again at the end of 8.
ct systemctl stop pimainteno.timer
FAILURE_ID=$(sed -n 's/.*pub const FAILURE: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)
REPAIR_ID=$(sed -n 's/.*pub const REPAIR: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)
# A service that fails on its first start only (exit 3 with an error
# message), then runs: one failure, one restart.
ct_write /usr/local/bin/pm-demo <<'EOF'
#!/bin/sh
if [ ! -e /var/tmp/pm-demo.started ]; then
	touch /var/tmp/pm-demo.started
	echo "pm-demo 1.0: loading configuration"
	echo "error: cannot open /etc/demo.conf: the first start always fails" >&2
	exit 3
fi
exec sleep infinity
EOF
# A service that always fails.
ct_write /usr/local/bin/pm-storm <<'EOF'
#!/bin/sh
echo "pm-storm: fatal: cannot reach the broker" >&2
exit 3
EOF
ct chmod 755 /usr/local/bin/pm-demo /usr/local/bin/pm-storm
for u in demo storm; do
	ct_write /etc/systemd/system/pm-$u.service <<EOF
[Service]
ExecStart=/usr/local/bin/pm-$u
EOF
done
ct_write /etc/systemd/system/pm-missing.service <<'EOF'
[Service]
ExecStart=/usr/local/bin/pm-not-installed --serve
EOF
ct_write /etc/systemd/system/pm-victim.service <<'EOF'
[Service]
ExecStart=/bin/sleep infinity
Restart=no
EOF
ct systemctl daemon-reload
expect_eq "pm-onfailure@.service is installed and loads" loaded \
	"$(ct systemctl show -p LoadState --value pm-onfailure@x.service)"
check "systemd-analyze verify pm-onfailure@x.service is clean" \
	sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify pm-onfailure@x.service 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
security=$(exposure pm-onfailure@x.service)
say "    systemd-analyze security pm-onfailure@x.service: $security"
check "pm-onfailure@x.service exposure $security <= 2.0" python3 -c "import sys; sys.exit(not (0 < float('$security') <= 2.0))"
expect_eq "  ... the figure in the README" "$(grep -F '| `pm-onfailure@.service`' README.md | awk -F'|' '{print $3}' | awk '{print $1}')" "$security"
for u in pimainteno-repair.service pimainteno-explain.service pimainteno-repair.path pimainteno-explain.path; do
	check "systemd-analyze verify $u is clean" \
		sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify $u 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
done
for u in pimainteno-repair.service pimainteno-explain.service; do
	security=$(exposure $u)
	say "    systemd-analyze security $u: $security"
	check "$u exposure $security <= 2.0" python3 -c "import sys; sys.exit(not (0 < float('$security') <= 2.0))"
	expect_eq "  ... the figure in the README" "$(grep -F "| \`$u\`" README.md | awk -F'|' '{print $3}' | awk '{print $1}')" "$security"
done

out=$(ct pimainteno watch pm-demo.service 2>&1) && rc=0 || rc=$?
expect_eq "pimainteno watch pm-demo.service" 0 "$rc"
expect_in "  ... says so" "systemd reloaded" "$out"
expect_in "  ... in its own fragment" "pm-demo.service" "$(ct cat /etc/pimainteno/conf.d/90-watch.toml)"
expect_eq "  ... the unit has its OnFailure= hook after the reload" "pm-onfailure@pm-demo.service.service" \
	"$(ct systemctl show -p OnFailure --value pm-demo.service)"
expect_eq "  ... and pimainteno.service none" "" "$(ct systemctl show -p OnFailure --value pimainteno.service)"
expect_eq "  ... the handler runs as the service account" pi "$(ct systemctl show -p User --value pm-onfailure@x.service)"
for u in pm-storm.service pm-missing.service pm-victim.service; do ct pimainteno watch --no-reload "$u" >/dev/null; done
ct systemctl daemon-reload
expect_in "pimainteno status lists the watched units" "pm-missing.service" "$(ct pimainteno status)"


# -- a unit that exits 3: recorded with its journal lines, diagnosed, restarted once
ct rm -f /var/tmp/pm-demo.started
before=$(handler_run pm-demo.service)
ct systemctl start pm-demo.service
wait_handler pm-demo.service "$before"
expect_eq "pm-demo failed once and was restarted: active" active "$(ct systemctl is-active pm-demo.service || true)"
expect_eq "  ... the handler ended successfully" success "$(ct systemctl show -p Result --value pm-onfailure@pm-demo.service.service)"
expect_eq "  ... and so did the repair unit" success "$(ct systemctl show -p Result --value pimainteno-repair.service)"
expect_eq "  ... whose queue is empty" "" "$(ct find /run/pimainteno/queue -type f)"
hist=$(ct pimainteno history pm-demo.service 2>&1)
printf '%s\n' "$hist" | sed -n '1,30p' | sed 's/^/    | /'
expect_in "  ... the record holds the run's journal lines (read through sd-journal)" \
	"error: cannot open /etc/demo.conf: the first start always fails" "$hist"
expect_in "  ... the result and exit status" "exit-code (exited, status 3)" "$hist"
expect_in "  ... a diagnosis" "diagnosis (analyzer, exit_status" "$hist"
expect_in "  ... and one restart, done" "repair: restart (done, then active)" "$hist"
expect_eq "  ... one failure event in the journal" 1 \
	"$(ct journalctl --no-pager -o cat MESSAGE_ID=$FAILURE_ID PM_UNIT=pm-demo.service | grep -c . || true)"
expect_eq "  ... one repair event, done" done \
	"$(ct journalctl --no-pager -o json MESSAGE_ID=$REPAIR_ID PM_UNIT=pm-demo.service | field_values PM_OUTCOME | tr '\n' ' ' | xargs)"

# -- a missing binary (203/EXEC), provider none: the analyzer says so; no restart
before=$(handler_run pm-missing.service)
ct systemctl start pm-missing.service || true
wait_handler pm-missing.service "$before"
hist=$(ct pimainteno history pm-missing.service 2>&1)
expect_in "203/EXEC: diagnosed by the analyzer" "diagnosis (analyzer, exec" "$hist"
expect_in "  ... naming the program" "/usr/local/bin/pm-not-installed" "$hist"
expect_in "  ... recorded only, not restarted" "repair: none (skipped)" "$hist"
expect_in "  ... with the LLM not asked" "llm: not asked (0 tokens)" "$hist"

# -- the openai provider: a validated diagnosis, then the same failure costs no call
openai_mock onfailure-mock
for round in 1 2; do
	ct rm -f /var/tmp/pm-demo.started
	before=$(handler_run pm-demo.service)
	# Six starts within ten seconds would hit pm-demo's own start limit
	# (systemd's default, 5 per 10 s): an administrator's reset.
	ct systemctl reset-failed pm-demo.service
	ct systemctl restart pm-demo.service
	wait_handler pm-demo.service "$before"
	expect_eq "openai, failure $round: pm-demo is active again" active "$(ct systemctl is-active pm-demo.service || true)"
done
expect_eq "  ... one request to the mock for two identical failures" 1 "$(grep -c . "$WORK/onfailure-mock.log" 2>/dev/null || true)"
if [ -s "$WORK/onfailure-mock.log" ]; then
	expect_in "  ... in JSON mode" '"response_format": {"type": "json_object"}' "$(head -1 "$WORK/onfailure-mock.log")"
fi
hist=$(ct pimainteno history -n 2 pm-demo.service 2>&1)
expect_in "  ... the LLM's diagnosis, validated" "MOCK-DIAGNOSIS-41b7" "$hist"
expect_in "  ... from the model first" "diagnosis (llm" "$hist"
expect_in "  ... then from the cache" "diagnosis (cache" "$hist"
ct rm /etc/pimainteno/conf.d/60-openai.toml

# -- a service that runs as a user (User=, uid >= 1000) dies with a Python
# traceback. With the persistent journal, journald keeps its output in
# user-<uid>.journal and only systemd's lines in system.journal; the handler
# (another account) reads both through its systemd-journal group.
ct useradd --create-home --shell /usr/sbin/nologin weather
wuid=$(ct id -u weather)
check "User=weather: uid $wuid >= 1000 (journald splits its lines off)" test "$wuid" -ge 1000
check "  ... and the journal is persistent (/var/log/journal)" ct test -d /var/log/journal
# Fails on its first start after the marker is removed, then runs.
ct_write /usr/local/bin/pm-weather <<'EOF'
#!/usr/bin/python3
import os
import time

MARK = "/var/tmp/pm-weather.failed"


def read_temperature():
    raise RuntimeError("sensor returned NaN")


if not os.path.exists(MARK):
    open(MARK, "w").close()
    print("pm-weather: reading the sensor on GPIO 4", flush=True)
    read_temperature()
while True:
    time.sleep(3600)
EOF
ct chmod 755 /usr/local/bin/pm-weather
ct_write /etc/systemd/system/pm-weather.service <<'EOF'
[Service]
User=weather
ExecStart=/usr/local/bin/pm-weather
EOF
ct pimainteno watch pm-weather.service >/dev/null
# weather_fails: its first start fails; the handler restarts it.
weather_fails() {
	ct rm -f /var/tmp/pm-weather.failed
	local before
	before=$(handler_run pm-weather.service)
	ct systemctl reset-failed pm-weather.service 2>/dev/null || true
	ct systemctl restart pm-weather.service
	wait_handler pm-weather.service "$before"
}
weather_fails
expect_in "  ... its traceback is in user-$wuid.journal" "RuntimeError: sensor returned NaN" \
	"$(ct journalctl --no-pager -o cat --file "/var/log/journal/*/user-$wuid.journal" _SYSTEMD_UNIT=pm-weather.service)"
expect_not_in "  ... and not in the system files (all the handler read before)" "RuntimeError" \
	"$(ct journalctl --no-pager -o cat --system _SYSTEMD_UNIT=pm-weather.service + UNIT=pm-weather.service)"
hist=$(ct pimainteno history -n 1 pm-weather.service 2>&1)
printf '%s\n' "$hist" | sed -n '1,24p' | sed 's/^/    | /'
for want in "Traceback (most recent call last):" 'raise RuntimeError("sensor returned NaN")' \
	"pm-weather[" "RuntimeError: sensor returned NaN"; do
	expect_in "  ... the record holds the program's line: $want" "$want" "$hist"
done
expect_in "  ... the Python analyzer names the exception" \
	"diagnosis (analyzer, python, 90% sure): an uncaught Python exception: RuntimeError: sensor returned NaN" "$hist"
expect_in "  ... and it was restarted" "repair: restart (done, then active)" "$hist"
openai_mock weather-mock
weather_fails
expect_eq "the openai provider: one request for the User= service's failure" 1 \
	"$(grep -c . "$WORK/weather-mock.log" 2>/dev/null || true)"
prompt=$(python3 -c 'import json, sys; print("\n".join(m["content"] for m in json.loads(open(sys.argv[1]).readline())["body"]["messages"]))' \
	"$WORK/weather-mock.log" 2>/dev/null || true)
for want in "Traceback (most recent call last):" "in read_temperature" "RuntimeError: sensor returned NaN"; do
	expect_in "  ... its body holds: $want" "$want" "$prompt"
done
hist=$(ct pimainteno history -n 1 pm-weather.service 2>&1)
expect_in "  ... the model's diagnosis, its evidence line found in the journal" "diagnosis (llm, python" "$hist"
expect_in "  ... (the mock's)" "MOCK-DIAGNOSIS-weather" "$hist"
# A volatile journal (/run/log/journal) is not split: the same failure
# there has the same signature (the stored diagnosis, no request).
ct journalctl --relinquish-var
weather_fails
expect_in "a volatile journal: the traceback is in /run/log/journal" "RuntimeError: sensor returned NaN" \
	"$(ct journalctl --no-pager -o cat --file '/run/log/journal/*/*.journal' _SYSTEMD_UNIT=pm-weather.service)"
ct journalctl --flush
hist=$(ct pimainteno history -n 1 pm-weather.service 2>&1)
expect_in "  ... the record holds it" "RuntimeError: sensor returned NaN" "$hist"
expect_in "  ... the same signature: the stored diagnosis" "diagnosis (cache, python" "$hist"
expect_eq "  ... and no second request" 1 "$(grep -c . "$WORK/weather-mock.log" 2>/dev/null || true)"
ct rm /etc/pimainteno/conf.d/60-openai.toml
# Without the journal group (an administrator's drop-in), sd-journal skips
# the files silently: the repair unit says which it cannot read.
ct mkdir -p /etc/systemd/system/pimainteno-repair.service.d
printf '[Service]\nSupplementaryGroups=\n' |
	ct_write /etc/systemd/system/pimainteno-repair.service.d/90-no-journal-group.conf
ct systemctl daemon-reload
weather_fails
expect_in "without SupplementaryGroups=systemd-journal: the repair unit names the files it cannot read" \
	"this account cannot read" \
	"$(ct journalctl --no-pager -o cat -u pimainteno-repair.service -n 30)"
expect_eq "  ... and still ends successfully" success \
	"$(ct systemctl show -p Result --value pimainteno-repair.service)"
ct rm -r /etc/systemd/system/pimainteno-repair.service.d
ct systemctl daemon-reload

# -- a storm: 20 failures in a minute, at most max_repairs_per_hour (3) restarts
before=$(handler_run pm-storm.service)
for i in $(seq 1 20); do
	ct systemctl reset-failed pm-storm.service 2>/dev/null || true
	ct systemctl start pm-storm.service 2>/dev/null || true
	sleep 0.5
done
wait_handler pm-storm.service "$before"
# Until the restarts it made have failed and been handled too.
sleep 2
repair_idle
restarts=$(ct journalctl --no-pager -o json MESSAGE_ID=$REPAIR_ID PM_UNIT=pm-storm.service | field_values PM_OUTCOME | grep -c . || true)
failures=$(ct journalctl --no-pager -o cat MESSAGE_ID=$FAILURE_ID PM_UNIT=pm-storm.service | grep -c . || true)
say "    pm-storm: $failures failures handled, $restarts restarts"
check "storm: at most 3 restarts ($restarts)" test "$restarts" -le 3 -a "$restarts" -ge 1
expect_in "  ... then recorded only, with the reason" "max_repairs_per_hour = 3" "$(ct pimainteno history -n 1 pm-storm.service)"
expect_eq "  ... pm-onfailure@ never ended failed" "" \
	"$(ct systemctl list-units --all --state=failed --plain --no-legend 'pm-onfailure@*' | awk '{print $1}')"
expect_eq "  ... and every run of it succeeded" "success" \
	"$(ct systemctl show -p Result --value pm-onfailure@pm-storm.service.service)"
expect_eq "  ... and the repair unit's" "success" "$(ct systemctl show -p Result --value pimainteno-repair.service)"

# -- time to repair: SIGKILL of a watched service (Restart=no) to active again
ct_write /etc/pimainteno/conf.d/85-bench.toml <<'EOF'
[systemd_monitor]
max_repairs_per_hour = 1000
EOF
ct systemctl start pm-victim.service
sleep 0.5
python3 - "$CT_PID" <<'EOF' | tee "$WORK/time-to-repair.txt" | sed 's/^/    /'
import statistics, subprocess, sys, time
ct = sys.argv[1]
def run(*a):
    return subprocess.run(["nsenter", "-t", ct, "-a", *a], capture_output=True, text=True).stdout
def show(unit, *props):
    out = run("systemctl", "show", "-p", ",".join(props), unit)
    return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
repair, handler = [], []
w = "pimainteno-repair.service"
for i in range(20):
    run("systemctl", "reset-failed", "pm-victim.service")
    before = show(w, "InvocationID")["InvocationID"]
    run("systemctl", "kill", "-s", "KILL", "pm-victim.service")
    deadline = time.time() + 20
    while time.time() < deadline:
        s = show(w, "ActiveState", "InvocationID")
        if s["InvocationID"] != before and s["ActiveState"] in ("inactive", "failed"):
            break
        time.sleep(0.05)
    v = show("pm-victim.service", "ActiveState", "InactiveEnterTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    ws = show(w, "InactiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic")
    if v["ActiveState"] != "active":
        print(f"run {i}: pm-victim is {v['ActiveState']}")
        continue
    repair.append((int(v["ActiveEnterTimestampMonotonic"]) - int(v["InactiveEnterTimestampMonotonic"])) / 1000)
    handler.append((int(ws["InactiveEnterTimestampMonotonic"]) - int(ws["InactiveExitTimestampMonotonic"])) / 1000)
    time.sleep(0.2)
print(f"time to repair: {len(repair)} of 20 repaired, median {statistics.median(repair) if repair else 0:.0f} ms, min {min(repair, default=0):.0f}, max {max(repair, default=0):.0f}")
print(f"repair unit run (4 steps, known signature): median {statistics.median(handler) if handler else 0:.0f} ms")
EOF
ttr=$(sed -n 's/.*median \([0-9]*\) ms, min.*/\1/p' "$WORK/time-to-repair.txt")
check "time to repair: all 20 repaired" grep -q "20 of 20 repaired" "$WORK/time-to-repair.txt"
check "  ... median ${ttr:-?} ms < 1000 ms" test "${ttr:-99999}" -lt 1000

# -- a service killed by a signal while dpkg upgrades its package: ignored
for v in 1 2; do
	ct mkdir -p /root/pmdd-$v/DEBIAN /root/pmdd-$v/lib/systemd/system
	ct_write /root/pmdd-$v/DEBIAN/control <<EOF
Package: pm-dpkgdemo
Version: $v
Architecture: all
Maintainer: PiMainteno system tests <pimainteno@example.invalid>
Description: a service whose upgrade kills it (PiMainteno system tests)
EOF
	ct_write /root/pmdd-$v/lib/systemd/system/pm-dpkgdemo.service <<'EOF'
[Service]
ExecStart=/bin/sleep infinity
EOF
done
# The old version's prerm kills the service with SIGKILL during the upgrade,
# then gives the handler time to look while dpkg is still at work.
ct_write /root/pmdd-1/DEBIAN/prerm <<'EOF'
#!/bin/sh
if [ "$1" = upgrade ]; then
	systemctl kill -s KILL pm-dpkgdemo.service
	sleep 3
	dpkg-query -W -f '${Status}' pm-dpkgdemo > /var/tmp/pmdd-status
fi
EOF
ct chmod 755 /root/pmdd-1/DEBIAN/prerm
ct dpkg-deb --build /root/pmdd-1 /root/pm-dpkgdemo_1_all.deb >/dev/null
ct dpkg-deb --build /root/pmdd-2 /root/pm-dpkgdemo_2_all.deb >/dev/null
ct dpkg -i /root/pm-dpkgdemo_1_all.deb >/dev/null
ct pimainteno watch pm-dpkgdemo.service >/dev/null
ct systemctl start pm-dpkgdemo.service
before=$(handler_run pm-dpkgdemo.service)
ct dpkg -i /root/pm-dpkgdemo_2_all.deb >/dev/null
wait_handler pm-dpkgdemo.service "$before"
say "    dpkg's status of the package while its prerm ran: $(ct cat /var/tmp/pmdd-status 2>/dev/null)"
expect_eq "killed by a signal during its package's upgrade: the handler ran" success \
	"$(ct systemctl show -p Result --value pm-onfailure@pm-dpkgdemo.service.service)"
expect_in "  ... and ignored it" "while dpkg is upgrading or removing its package" \
	"$(ct journalctl --no-pager -o cat PM_UNIT=pm-dpkgdemo.service PM_OUTCOME=ignored)"
expect_in "  ... nothing recorded" "no failures recorded" "$(ct pimainteno history pm-dpkgdemo.service)"
ct dpkg --purge pm-dpkgdemo >/dev/null

# Leave nothing failed behind for scenario 5.
for u in demo storm missing victim dpkgdemo weather; do
	ct systemctl stop "pm-$u.service" 2>/dev/null || true
	ct pimainteno unwatch --no-reload "pm-$u.service" >/dev/null
done
ct rm -f /etc/pimainteno/conf.d/85-bench.toml
check "pimainteno unwatch removed the fragment" sh -c "! nsenter -t $CT_PID -a test -e /etc/pimainteno/conf.d/90-watch.toml"
ct systemctl daemon-reload
expect_eq "  ... and the hook is gone after the reload" "" "$(ct systemctl show -p OnFailure --value pm-demo.service)"
ct systemctl reset-failed
expect_eq "no unit is left failed" "" "$(ct systemctl --failed --plain --no-legend)"
fi

# ---------------------------------------------------------------- 7f. repair under faults
if want 7f; then

section "7f. repair under faults: no failure lost, no forged line trusted, no store in the way"
ct systemctl stop pimainteno.timer
FAILURE_ID=$(sed -n 's/.*pub const FAILURE: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)
REPAIR_ID=$(sed -n 's/.*pub const REPAIR: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)
# systemd's own count of a unit's failures: PID 1's "failed with result"
# lines; PiMainteno's: its failure events, and its restarts done.
sd_failures() { ct journalctl --no-pager -o cat _PID=1 UNIT="$1" MESSAGE_ID=d9b373ed55a64feb8242e02dbe79a49c | grep -c . || true; }
pm_failures() { ct journalctl --no-pager -o cat MESSAGE_ID="$FAILURE_ID" PM_UNIT="$1" | grep -c . || true; }
pm_restarts() { ct journalctl --no-pager -o cat MESSAGE_ID="$REPAIR_ID" PM_UNIT="$1" PM_OUTCOME=done | grep -c . || true; }
# sleeper NAME: a watched service that runs until it is killed (Restart=no;
# no start limit: the scenarios kill it more often than systemd's default of
# 5 starts in 10 s allows).
sleeper() {
	printf '[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\nRestart=no\n' |
		ct_write "/etc/systemd/system/$1.service"
	ct pimainteno watch --no-reload "$1.service" >/dev/null
}
# kill_and_wait NAME: SIGKILL the running service, wait until its failure
# is handled.
kill_and_wait() {
	local before
	before=$(handler_run "$1.service")
	ct systemctl kill -s KILL "$1.service"
	wait_handler "$1.service" "$before"
}
STORE=/var/lib/pimainteno/store

# -- a unit that fails again right after each restart
ct_write /etc/systemd/system/pm-flap.service <<'UNIT'
[Service]
ExecStart=/bin/sh -c "echo 'pm-flap: cannot start'; exit 3"
Restart=no
UNIT
ct pimainteno watch --no-reload pm-flap.service >/dev/null
for u in pm-slow pm-inject pm-store pm-clock; do sleeper "$u"; done
ct systemctl daemon-reload
ct systemctl start pm-flap.service || true
sleep 2
repair_idle
f=$(sd_failures pm-flap.service)
say "    pm-flap: $f failures, $(pm_failures pm-flap.service) handled, $(pm_restarts pm-flap.service) restarts"
expect_eq "a unit failing right after each restart: 4 failures (the first, then one after each restart)" 4 "$f"
expect_eq "  ... every one recorded and handled" "$f" "$(pm_failures pm-flap.service)"
expect_eq "  ... restarted max_repairs_per_hour (3) times" 3 "$(pm_restarts pm-flap.service)"
expect_eq "  ... and left failed" failed "$(ct systemctl is-active pm-flap.service || true)"

# -- a slow LLM: the second failure, 3 s after the first, is repaired too
MOCK_DELAY=30 openai_mock slow-llm
ct systemctl start pm-slow.service
sleep 0.5
t0=$(date +%s)
ct systemctl kill -s KILL pm-slow.service
sleep 3
ct systemctl kill -s KILL pm-slow.service
for i in $(seq 1 60); do
	[ "$(pm_restarts pm-slow.service)" -ge 2 ] && break
	sleep 0.2
done
t1=$(date +%s)
expect_eq "a slow LLM (30 s): two kills 3 s apart, both repaired" 2 "$(pm_restarts pm-slow.service)"
check "  ... within $((t1 - t0)) s, before the model answered" test $((t1 - t0)) -lt 15
expect_eq "  ... pm-slow is active" active "$(ct systemctl is-active pm-slow.service || true)"
repair_idle
hist=$(ct pimainteno history -n 2 pm-slow.service 2>&1)
printf '%s\n' "$hist" | grep -E "failure|diagnosis|repair" | sed 's/^/    | /'
expect_eq "  ... both failures recorded" 2 "$(pm_failures pm-slow.service)"
expect_in "  ... the model's diagnosis added afterwards" "diagnosis (llm" "$hist"
expect_in "  ... and taken for the identical second failure" "diagnosis (cache" "$hist"
expect_eq "  ... one request in all" 1 "$(grep -c . "$WORK/slow-llm.log" 2>/dev/null || true)"
ct rm /etc/pimainteno/conf.d/60-openai.toml

# -- an unprivileged user forges systemd's word with the run's INVOCATION_ID=
ct systemctl start pm-inject.service
sleep 0.5
id=$(ct systemctl show -p InvocationID --value pm-inject.service)
printf 'MESSAGE=Dependency failed for pm-inject.service.\nINVOCATION_ID=%s\nUNIT=pm-inject.service\nSYSLOG_IDENTIFIER=systemd\nPRIORITY=3\n' "$id" |
	ct runuser -u nobody -- logger --journald
check "a line forged by nobody carries the run's INVOCATION_ID" \
	sh -c "nsenter -t $CT_PID -a journalctl --no-pager -o cat INVOCATION_ID=$id | grep -q 'Dependency failed'"
kill_and_wait pm-inject
expect_eq "  ... the unit is restarted all the same" active "$(ct systemctl is-active pm-inject.service || true)"
hist=$(ct pimainteno history -n 1 pm-inject.service 2>&1)
expect_not_in "  ... the forged line is not in the record" "Dependency failed" "$hist"
expect_in "  ... diagnosed from systemd's word (killed by a signal)" "diagnosis (analyzer, signal" "$hist"

# -- harmless "No such file" lines in a service's own output
ct_write /usr/local/bin/pm-harmless <<'SCRIPT'
#!/bin/sh
echo "config.yaml: No such file or directory; using defaults"
echo "pm-harmless: serving"
if [ ! -e /var/tmp/pm-harmless.crashed ]; then
	touch /var/tmp/pm-harmless.crashed
	sleep 0.3
	echo "pm-harmless: the sensor bus went away" >&2
	exit 1
fi
exec sleep infinity
SCRIPT
ct chmod 755 /usr/local/bin/pm-harmless
printf '[Service]\nExecStart=/usr/local/bin/pm-harmless\n' | ct_write /etc/systemd/system/pm-harmless.service
ct pimainteno watch pm-harmless.service >/dev/null
before=$(handler_run pm-harmless.service)
ct systemctl start pm-harmless.service
wait_handler pm-harmless.service "$before"
hist=$(ct pimainteno history -n 1 pm-harmless.service 2>&1)
expect_in "a harmless 'No such file ... using defaults' line: still restarted" "repair: restart (done, then active)" "$hist"

# -- a broken store: the restart never waits for it (a limit high enough
# for the seven failures here)
ct_write /etc/pimainteno/conf.d/85-store.toml <<'TOML'
[systemd_monitor]
max_repairs_per_hour = 20
TOML
ct systemctl start pm-store.service
sleep 0.3
ct cp -a "$STORE" /var/tmp/store.good
restore_store() {
	ct sh -c "rm -rf $STORE/* && cp -a /var/tmp/store.good/. $STORE/"
}
for fault in garbage truncated full root-owned empty; do
	restore_store
	case $fault in
	garbage) ct sh -c "head -c 65536 /dev/urandom > $STORE/data.mdb" ;;
	truncated) ct sh -c "truncate -s \$((\$(stat -c %s $STORE/data.mdb) / 2)) $STORE/data.mdb" ;;
	full)
		# A full file system under the store's directory. (A full one
		# under a store with free pages inside its file still takes
		# records: LMDB reuses them. One that must grow cannot.)
		ct mount -t tmpfs -o size=64k tmpfs "$STORE"
		ct sh -c "chown pi:pi $STORE && (dd if=/dev/zero of=$STORE/filler bs=4k 2>/dev/null || true)"
		;;
	root-owned) ct sh -c "chown root:root $STORE/data.mdb $STORE/lock.mdb && chmod 600 $STORE/data.mdb $STORE/lock.mdb" ;;
	empty) ct sh -c ": > $STORE/data.mdb" ;;
	esac
	kill_and_wait pm-store
	expect_eq "a store $fault: pm-store is restarted all the same" active "$(ct systemctl is-active pm-store.service || true)"
	expect_in "  ... the repair unit says what is wrong, naming the store" "$STORE" \
		"$(ct journalctl --no-pager -o cat -u pimainteno-repair.service PM_EVENT=store -n 3)"
	st=$(ct pimainteno status 2>&1 || true)
	expect_in "  ... pimainteno status says so" "store fault seen by pimainteno-repair.service" "$st"
	[ "$fault" != full ] || ct umount "$STORE"
done
expect_eq "  ... a store cut to nothing was not made anew" 0 "$(ct stat -c %s $STORE/data.mdb)"
check "  ... no process died of SIGBUS" sh -c "! nsenter -t $CT_PID -a journalctl --no-pager -o cat | grep -q 'status=7/BUS'"
out=$(ct pimainteno history pm-store.service 2>&1) && rc=0 || rc=$?
check "  ... pimainteno history on it exits with an error, not a signal (rc $rc)" test "$rc" -gt 0 -a "$rc" -lt 128
# Back to a working store: the failures kept meanwhile are recorded.
restore_store
kill_and_wait pm-store
expect_eq "the store works again: the failures that came meanwhile are recorded (5 + this one)" 6 \
	"$(ct pimainteno history -n 100 pm-store.service | grep -c '  failure  ' || true)"
st=$(ct pimainteno status 2>&1 || true)
expect_not_in "  ... and status reports no fault" "store fault" "$st"
# sudo pimainteno with lock.mdb missing: the file is the service account's.
ct rm "$STORE/lock.mdb"
ct pimainteno status >/dev/null 2>&1 || true
expect_eq "pimainteno status as root recreates lock.mdb for the service account" pi "$(ct stat -c %U $STORE/lock.mdb)"
kill_and_wait pm-store
expect_eq "  ... which goes on recording" 7 "$(ct pimainteno history -n 100 pm-store.service | grep -c '  failure  ' || true)"
ct rm /etc/pimainteno/conf.d/85-store.toml

# -- clock steps (libfaketime on the repair unit): records stay in order,
# the limit is counted on the boot clock
(cd "$WORK" && apt-get download -qq libfaketime >/dev/null 2>&1) ||
	die "apt-get download libfaketime failed (run apt-get update first)"
cp "$WORK"/libfaketime_*.deb "$(ct_root)/root/"
ct sh -c 'dpkg -i /root/libfaketime_*.deb >/dev/null'
FAKELIB=$(ct dpkg -L libfaketime | grep '/libfaketime.so.1$' | head -1)
# One record kept per unit: a record keyed by a clock set back would be
# the oldest, and trimmed as soon as it is written.
ct_write /etc/pimainteno/conf.d/85-clock.toml <<'TOML'
[cache]
history = 1
[systemd_monitor]
max_repairs_per_hour = 10
TOML
faketime() {
	ct mkdir -p /etc/systemd/system/pimainteno-repair.service.d
	if [ -n "$1" ]; then
		printf '[Service]\nEnvironment=LD_PRELOAD=%s FAKETIME=%s DONT_FAKE_MONOTONIC=1\n' "$FAKELIB" "$1" |
			ct_write /etc/systemd/system/pimainteno-repair.service.d/95-faketime.conf
	else
		ct rm -f /etc/systemd/system/pimainteno-repair.service.d/95-faketime.conf
	fi
	ct systemctl daemon-reload
}
ct systemctl start pm-clock.service
sleep 0.3
kill_and_wait pm-clock
faketime -1d
kill_and_wait pm-clock
hist=$(ct pimainteno history -n 1 pm-clock.service 2>&1)
expect_in "the clock set back a day: the newest record is the one just written" "$(date -u -d yesterday +%Y-%m-%d)" "$hist"
expect_not_in "  ... never trimmed at once" "is gone" "$(ct journalctl --no-pager -o cat -u pimainteno-repair.service -n 50)"
expect_eq "  ... and pm-clock restarted" active "$(ct systemctl is-active pm-clock.service || true)"
faketime +1y
kill_and_wait pm-clock
expect_in "the clock a year ahead: recorded as such" "$(date -u -d 'next year' +%Y)" "$(ct pimainteno history -n 1 pm-clock.service 2>&1)"
faketime ""
kill_and_wait pm-clock
expect_eq "  ... back to the right time: restarted, the record from the future counting as 1 of 10, no more" \
	active "$(ct systemctl is-active pm-clock.service || true)"
expect_in "  ... counted on the boot clock: repair 4 of 10" "repair 4 of 10 this hour" \
	"$(ct pimainteno history -n 1 pm-clock.service 2>&1)"
ct rm /etc/pimainteno/conf.d/85-clock.toml
ct rm -r /etc/systemd/system/pimainteno-repair.service.d
ct systemctl daemon-reload

# -- watch: names systemd would refuse, templates
long=$(printf 'a%.0s' $(seq 1 246)).service
out=$(ct pimainteno watch "$long" 2>&1) && rc=0 || rc=$?
expect_eq "watch refuses a ${#long}-character name" 78 "$rc"
expect_in "  ... saying why" "234" "$out"
expect_eq "  ... the other units keep their hook" "pm-onfailure@pm-flap.service.service" \
	"$(ct systemctl show -p OnFailure --value pm-flap.service)"
ct_write /etc/systemd/system/pm-tpl@.service <<'UNIT'
[Service]
ExecStart=/bin/sleep infinity
Restart=no
UNIT
out=$(ct pimainteno watch pm-tpl@.service 2>&1) && rc=0 || rc=$?
expect_eq "watch pm-tpl@.service (a template)" 0 "$rc"
ct systemctl start pm-tpl@kitchen.service
sleep 0.3
kill_and_wait pm-tpl@kitchen
expect_eq "  ... its instance pm-tpl@kitchen is restarted" active "$(ct systemctl is-active pm-tpl@kitchen.service || true)"
expect_in "  ... and recorded" "repair: restart (done" "$(ct pimainteno history -n 1 pm-tpl@kitchen.service 2>&1)"

# -- a storm: 3 units failing every second for 2 minutes. First without
# PiMainteno (the floor), then watched: restarts per unit within the limit,
# no failure lost, and the CPU each handled failure costs.
ct_write /etc/pimainteno/conf.d/85-storm.toml <<'TOML'
[cache]
history = 400
TOML
for n in 1 2 3; do
	printf '[Service]\nExecStart=/bin/sh -c "exit 3"\n' | ct_write "/etc/systemd/system/pm-gust$n.service"
done
ct systemctl daemon-reload
# CPU of everything the container's system.slice ran (cgroup v2 keeps what
# ended units used; on a host with the hybrid layout the v2 tree is under
# unified/).
cpu_usec() {
	ct sh -c 'for f in /sys/fs/cgroup/system.slice/cpu.stat /sys/fs/cgroup/unified/system.slice/cpu.stat; do
		[ -r "$f" ] && exec awk "/^usage_usec/ {print \$2}" "$f"
	done; echo "no cpu.stat for system.slice" >&2; exit 1'
}
storm() {
	local i
	for i in $(seq 1 "$1"); do
		ct sh -c 'for n in 1 2 3; do systemctl reset-failed pm-gust$n.service; systemctl start --no-block pm-gust$n.service; done' 2>/dev/null || true
		sleep 1
	done
}
c0=$(cpu_usec)
storm 30
sleep 2
unwatched_cpu=$(($(cpu_usec) - c0))
unwatched_failures=0
for n in 1 2 3; do unwatched_failures=$((unwatched_failures + $(sd_failures pm-gust$n.service))); done
for n in 1 2 3; do ct pimainteno watch --no-reload "pm-gust$n.service" >/dev/null; done
ct systemctl daemon-reload
c0=$(cpu_usec)
storm 120
sleep 2
repair_idle
watched_cpu=$(($(cpu_usec) - c0))
total_sd=0
total_pm=0
for n in 1 2 3; do
	sd=$(($(sd_failures pm-gust$n.service)))
	pm=$(pm_failures pm-gust$n.service)
	r=$(pm_restarts pm-gust$n.service)
	total_pm=$((total_pm + pm))
	say "    pm-gust$n: $pm failures handled, $r restarts"
	check "storm: pm-gust$n restarted at most max_repairs_per_hour (3) times ($r)" test "$r" -le 3 -a "$r" -ge 1
	check "  ... all its failures recorded ($(ct pimainteno history -n 1000 pm-gust$n.service | grep -c '  failure  ' || true) of $pm handled)" \
		test "$(ct pimainteno history -n 1000 pm-gust$n.service | grep -c '  failure  ' || true)" -eq "$pm"
done
for n in 1 2 3; do total_sd=$((total_sd + $(sd_failures pm-gust$n.service))); done
watched_sd=$((total_sd - unwatched_failures))
expect_eq "  ... no failure lost: systemd's failures while watched = PiMainteno's failure events" "$watched_sd" "$total_pm"
per_failure=$(python3 -c "print(round(($watched_cpu - $unwatched_cpu * $watched_sd / max($unwatched_failures, 1)) / max($total_pm, 1) / 1000, 1))")
say "    CPU: $((unwatched_cpu / 1000)) ms for $unwatched_failures failures unwatched; $((watched_cpu / 1000)) ms for $watched_sd watched; ${per_failure} ms per handled failure"
echo "$per_failure" >"$WORK/cpu-per-failure.txt"
check "  ... at most 50 ms of CPU per handled failure (${per_failure} ms)" python3 -c "import sys; sys.exit(not $per_failure <= 50)"
expect_eq "  ... pimainteno-repair.service never ended failed" success "$(ct systemctl show -p Result --value pimainteno-repair.service)"

# Leave nothing failed behind for scenario 5.
for u in pm-flap pm-slow pm-inject pm-harmless pm-store pm-clock pm-tpl@ pm-gust1 pm-gust2 pm-gust3; do
	ct systemctl stop "$u.service" 2>/dev/null || true
	ct pimainteno unwatch --no-reload "$u.service" >/dev/null 2>&1 || true
done
ct systemctl stop pm-tpl@kitchen.service
ct rm -f /etc/pimainteno/conf.d/85-storm.toml
ct systemctl daemon-reload
ct systemctl reset-failed
expect_eq "no unit is left failed" "" "$(ct systemctl --failed --plain --no-legend)"
fi

# ---------------------------------------------------------------- 8. pm-patch
if want 8; then

section "8. pm-patch: a failing unit's project fixed on a branch"
PATCH_ID=$(sed -n 's/.*pub const PATCH: &str = "\([0-9a-f]*\)";/\1/p' src/logging.rs)
# A project of pi's whose check fails (add subtracts), and its service,
# which crashes on the same bug.
ct runuser -u pi -- sh -c 'set -e; cd /home/pi; git init -q -b main calc; cd calc
	printf "add() {\n\techo \$((\$1 - \$2))\n}\n" > calc.sh
	printf ". ./calc.sh\nr=\$(add 2 3)\n[ \"\$r\" = 5 ] || { echo \"FAIL: add 2 3 gave \$r\"; exit 1; }\necho ok\n" > test.sh
	git add . && git -c user.name=Pi -c user.email=pi@example.invalid commit -qm "calc"'
ct_write /usr/local/bin/pm-calc <<'EOF'
#!/bin/sh
cd /home/pi/calc
. ./calc.sh
r=$(add 2 3)
if [ "$r" != 5 ]; then
	echo "calc: add 2 3 gave $r" >&2
	kill -SEGV $$
fi
exec sleep infinity
EOF
ct chmod 755 /usr/local/bin/pm-calc
ct_write /etc/systemd/system/calc.service <<'EOF'
[Service]
User=pi
ExecStart=/usr/local/bin/pm-calc
EOF
openai_mock patch-mock
ct_write /etc/pimainteno/conf.d/70-calc.toml <<'EOF'
[[project]]
name = "calc"
path = "/home/pi/calc"
summary_file = ""
check = "sh test.sh"
patch = "branch"
units = ["calc.service"]

[patch]
author_name = "PiMainteno on the Pi"
author_email = "pimainteno@raspberrypi.invalid"

# The service would crash again on every restart until the fix is merged.
[systemd_monitor]
restart = false
EOF
check "check-config accepts the project" ct pimainteno check-config
ct systemctl daemon-reload
expect_eq "calc.service is watched (a project's unit)" "pm-onfailure@calc.service.service" \
	"$(ct systemctl show -p OnFailure --value calc.service)"
expect_eq "pimainteno-patch@calc.service runs as pi" pi "$(ct systemctl show -p User --value pimainteno-patch@calc.service)"
expect_in "  ... and may write the project" "/home/pi/calc" "$(ct systemctl show -p ReadWritePaths --value pimainteno-patch@calc.service)"
check "systemd-analyze verify pimainteno-patch@calc.service is clean" \
	sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify pimainteno-patch@calc.service 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
security=$(exposure pimainteno-patch@calc.service)
say "    systemd-analyze security pimainteno-patch@calc.service: $security"
expect_eq "  ... the figure in the README" "$(grep -F '| `pimainteno-patch@.service` (provider' README.md | awk -F'|' '{print $3}' | awk '{print $1}')" "$security"

before=$(handler_run calc.service)
ct systemctl start calc.service || true
wait_handler calc.service "$before"
# pm-onfailure started pimainteno-patch@calc.service; wait for it.
for i in $(seq 1 150); do
	res=$(ct systemctl show -p ActiveState,Result --value pimainteno-patch@calc.service | tr '\n' ' ')
	case "$res" in "inactive success "|"failed "*) [ -n "$(ct systemctl show -p InvocationID --value pimainteno-patch@calc.service)" ] && break ;; esac
	sleep 0.2
done
hist=$(ct pimainteno history calc.service 2>&1)
expect_in "the crash was diagnosed as a code error for pm-patch" "handed to pm-patch for project calc" "$hist"
expect_in "  ... by the model, whose evidence is calc's own line (in pi's user-1000.journal)" \
	"MOCK-DIAGNOSIS-calc" "$hist"
expect_eq "pm-onfailure started pimainteno-patch@calc.service, which succeeded" success \
	"$(ct systemctl show -p Result --value pimainteno-patch@calc.service)"
expect_eq "  ... it ran" 1 "$(ct journalctl --no-pager -o cat -u pimainteno-patch@calc.service MESSAGE_ID=$PATCH_ID | grep -c . || true)"
branch=$(ct runuser -u pi -- git -C /home/pi/calc branch --list 'pimainteno/*' --format='%(refname:short)' | head -1)
check "the fix is committed on a branch ($branch)" test -n "$branch"
expect_in "  ... pi can git log it" "Generated-by: pimainteno" "$(ct runuser -u pi -- git -C /home/pi/calc log -1 --format=%B "$branch" 2>&1)"
expect_in "  ... by the configured author" "PiMainteno on the Pi" "$(ct runuser -u pi -- git -C /home/pi/calc log -1 --format=%an "$branch" 2>&1)"
expect_in "  ... with the mock's fix" '$(($1 + $2))' "$(ct runuser -u pi -- git -C /home/pi/calc show "$branch:calc.sh" 2>&1)"
expect_eq "  ... pi's checkout untouched" "" "$(ct runuser -u pi -- git -C /home/pi/calc status --porcelain)"
expect_eq "  ... no worktree left" 1 "$(ct runuser -u pi -- git -C /home/pi/calc worktree list | grep -c .)"
hist=$(ct pimainteno history calc 2>&1)
expect_in "pimainteno history calc shows the patch" "patch    committed" "$hist"
expect_in "  ... its branch" "branch: $branch" "$hist"
expect_in "  ... and its diff" '+	echo $(($1 + $2))' "$hist"
expect_in "the check ran contained (namespaces; the container, like a Pi, gives services no Landlock)" \
	"the check is contained: namespaces (bubblewrap" \
	"$(ct journalctl --no-pager -o cat -u pimainteno-patch@calc.service)"

# -- a hostile model: its fix of the probe project (tests/system/mock_openai.py,
# PROBE_FIX) also tries to write the repository's hooks, the checkout, pi's
# home and the store, to read pi's SSH key, and to reach the network.
ct runuser -u pi -- sh -c 'set -e; mkdir -p /home/pi/.ssh; echo PI-KEY-MARKER-77e1 > /home/pi/.ssh/id_ed25519
	chmod 600 /home/pi/.ssh/id_ed25519; cd /home/pi; git init -q -b main probe; cd probe
	echo "answer() { echo 41; }" > lib.sh; echo "# probe" > README.md
	printf ". ./lib.sh\n[ \"\$(answer)\" = 42 ] || { echo \"FAIL: answer gave \$(answer)\"; exit 1; }\necho ok\n" > test.sh
	git add . && git -c user.name=Pi -c user.email=pi@example.invalid commit -qm probe'
# probe_config: the probe project in the configuration.
probe_config() {
	ct_write /etc/pimainteno/conf.d/71-probe.toml <<'EOF'
[[project]]
name = "probe"
path = "/home/pi/probe"
summary_file = ""
check = "sh test.sh"
EOF
}
probe_config
ct systemctl daemon-reload
fingerprint() {
	ct sh -c 'cd /home/pi && find probe/.git/hooks probe/.git/config probe/README.md .ssh -type f -exec md5sum {} + | sort
		ls /var/lib/pimainteno/store'
}
before_probe=$(fingerprint)
check "systemctl start pimainteno-patch@probe.service" ct systemctl start pimainteno-patch@probe.service
probe_branch=$(ct runuser -u pi -- git -C /home/pi/probe branch --list 'pimainteno/*' --format='%(refname:short)' | head -1)
check "the hostile fix passed its check and is on a branch ($probe_branch), for pi to review" test -n "$probe_branch"
expect_eq "  ... the hooks, config, README, pi's ~/.ssh and the store are as they were" "$before_probe" "$(fingerprint)"
expect_eq "  ... no hook was planted" "" "$(ct ls /home/pi/probe/.git/hooks | grep -v '\.sample$' || true)"
probe_journal=$(ct journalctl --no-pager -o cat -u pimainteno-patch@probe.service)
expect_not_in "  ... the key never reached the journal" "PI-KEY-MARKER-77e1" "$probe_journal"
expect_not_in "  ... nor the record" "PI-KEY-MARKER-77e1" "$(ct pimainteno history probe 2>&1)"
expect_not_in "  ... the check reached no network (no GET at the mock)" "/probe-escaped" "$(cat "$WORK/patch-mock.log")"
ct rm -f /etc/pimainteno/conf.d/71-probe.toml
if want 3b; then
# -- 8b. the same under the real codex CLI: codex edits the worktree in its
# own sandbox (workspace-write) under pimainteno-patch@'s hardening and the
# generator's codex drop-in.
start_mock patch-codex-mock
printf 'sk-systest-0042\n' | ct_write /etc/pimainteno/patch-key
ct chown root:pi /etc/pimainteno/patch-key
ct chmod 640 /etc/pimainteno/patch-key
ct rm -f /etc/pimainteno/conf.d/60-openai.toml
codex_config /etc/pimainteno/conf.d/60-codex.toml "$MOCK_PORT" "api_key_file = \"/etc/pimainteno/patch-key\""
ct systemctl daemon-reload
check "the codex drop-in is on pimainteno-patch@.service too" \
	ct test -f /run/systemd/generator/pimainteno-patch@.service.d/55-pimainteno-codex.conf
security=$(exposure pimainteno-patch@calc.service)
say "    systemd-analyze security pimainteno-patch@calc.service with codex's drop-in: $security"
check "  ... its exposure $security <= 2.5" python3 -c "import sys; sys.exit(not (0 < float('$security') <= 2.5))"
expect_eq "  ... the figure in the README" \
	"$(grep -F '| `pimainteno-patch@.service` with provider `codex`' README.md | awk -F'|' '{print $3}' | awk '{print $1}')" "$security"
# New work: pi commits something; the check still fails at the new HEAD.
ct runuser -u pi -- sh -c 'cd /home/pi/calc && echo "# calc" > README.md && git add README.md &&
	git -c user.name=Pi -c user.email=pi@example.invalid commit -qm readme'
check "systemctl start pimainteno-patch@calc.service (codex)" ct systemctl start pimainteno-patch@calc.service
expect_eq "  ... result" success "$(ct systemctl show -p Result --value pimainteno-patch@calc.service)"
codex_branch=$(ct runuser -u pi -- git -C /home/pi/calc for-each-ref --sort=-committerdate --count=1 \
	--format='%(refname:short)' refs/heads/pimainteno/)
check "  ... the fix codex made is on a branch ($codex_branch)" test -n "$codex_branch"
expect_in "  ... the sed of the scripted model, run by codex in the worktree" '$(($1 + $2))' \
	"$(ct runuser -u pi -- git -C /home/pi/calc show "$codex_branch:calc.sh" 2>&1)"
expect_in "  ... its parent is pi's new HEAD" "$(ct runuser -u pi -- git -C /home/pi/calc rev-parse HEAD)" \
	"$(ct runuser -u pi -- git -C /home/pi/calc rev-parse "$codex_branch~1" 2>&1)"
expect_eq "  ... pi's checkout untouched" "" "$(ct runuser -u pi -- git -C /home/pi/calc status --porcelain)"
expect_eq "  ... no worktree left" 1 "$(ct runuser -u pi -- git -C /home/pi/calc worktree list | grep -c .)"
expect_eq "  ... two requests to the mock: the command, then the answer" 2 \
	"$(grep -c '"path": "/v1/responses"' "$WORK/patch-codex-mock.log" 2>/dev/null || true)"
expect_in "  ... codex ran contained" "the check is contained: namespaces (bubblewrap" \
	"$(ct journalctl --no-pager -o cat -u pimainteno-patch@calc.service)"
# The hostile model under codex (tests/system/mock_openai.py,
# CODEX_PROBE_COMMAND): its command reads pi's key, plants a hook, fixes.
probe_config
ct runuser -u pi -- sh -c 'cd /home/pi/probe && echo "# probe, again" > README.md &&
	git -c user.name=Pi -c user.email=pi@example.invalid commit -qam "new work"'
ct systemctl daemon-reload
before_probe=$(fingerprint)
check "systemctl start pimainteno-patch@probe.service (codex)" ct systemctl start pimainteno-patch@probe.service
expect_eq "  ... the hooks, config, README, pi's ~/.ssh and the store are as they were" "$before_probe" "$(fingerprint)"
expect_eq "  ... no hook was planted" "" "$(ct ls /home/pi/probe/.git/hooks | grep -v '\.sample$' || true)"
expect_in "  ... the command's output went back to the model" "function_call_output" "$(cat "$WORK/patch-codex-mock.log")"
expect_not_in "  ... without pi's key in it" "PI-KEY-MARKER-77e1" "$(cat "$WORK/patch-codex-mock.log")"
probe_branch=$(ct runuser -u pi -- git -C /home/pi/probe for-each-ref --sort=-committerdate --count=1 \
	--format='%(refname:short)' refs/heads/pimainteno/)
expect_in "  ... and codex's fix is on a branch ($probe_branch)" "echo 42" \
	"$(ct runuser -u pi -- git -C /home/pi/probe show "$probe_branch:lib.sh" 2>&1)"
ct rm -f /etc/pimainteno/conf.d/71-probe.toml
ct rm -f /etc/pimainteno/conf.d/60-codex.toml /etc/pimainteno/patch-key
fi

# Clean up: the crashing service stays stopped; nothing left failed.
ct systemctl stop calc.service 2>/dev/null || true
ct rm -f /etc/pimainteno/conf.d/70-calc.toml /etc/systemd/system/calc.service
ct systemctl daemon-reload
ct systemctl reset-failed
expect_eq "no unit is left failed" "" "$(ct systemctl --failed --plain --no-legend)"
ct systemctl start pimainteno.timer
fi

# ---------------------------------------------------------------- 9. pm-dashboard

if want 9; then
section "9. pm-dashboard: socket activation, idle exit, crash loops, basic auth off loopback"
DSOCK=pimainteno-dashboard.socket
DSVC=pimainteno-dashboard.service
DURL=http://127.0.0.1:8740
DDROP=/etc/systemd/system/$DSVC.d
# prop UNIT PROPERTY: one property's value.
prop() { ct systemctl show -p "$2" --value "$1"; }
# http_code URL [CURL ARGS...]: the status of a GET from the host ("000": no answer).
http_code() {
	local url=$1
	shift
	curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$@" "$url" || true
}
# wait_inactive: until the dashboard service is no longer running (10 s at most).
wait_inactive() {
	local i
	for i in $(seq 1 40); do
		case "$(prop $DSVC ActiveState)" in inactive | failed) return 0 ;; esac
		sleep 0.25
	done
}
check "systemd-analyze verify $DSOCK $DSVC is clean" \
	sh -c "out=\$(nsenter -t $CT_PID -a systemd-analyze verify $DSOCK $DSVC 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
security=$(exposure $DSVC)
say "    systemd-analyze security $DSVC: $security"
check "$DSVC exposure $security <= 2.0" python3 -c "import sys; sys.exit(not (0 < float('$security') <= 2.0))"
expect_eq "  ... the figure in the README" "$(grep -F "| \`$DSVC\`" README.md | awk -F'|' '{print $3}' | awk '{print $1}')" "$security"

# A short idle time, so that the exit is seen here (default 2min).
ct_write /etc/pimainteno/conf.d/80-web.toml <<'EOF'
[web]
idle_exit = "3s"
EOF
ct systemctl daemon-reload
expect_eq "the generator: the dashboard runs as the service account" pi "$(prop $DSVC User)"
expect_in "  ... reads the configured store" "PIMAINTENO_STORE=/var/lib/pimainteno/store" "$(prop $DSVC Environment)"
expect_in "  ... may write its lock file (read-only otherwise)" "/var/lib/pimainteno/store/lock.mdb" "$(prop $DSVC ReadWritePaths)"
check "systemctl enable --now $DSOCK" ct systemctl enable --now $DSOCK
expect_eq "  ... listening" listening "$(prop $DSOCK SubState)"
expect_eq "  ... on 127.0.0.1:8740" "127.0.0.1:8740" "$(prop $DSOCK Listen | awk '{print $1}')"
expect_eq "  ... the service is not running yet" inactive "$(prop $DSVC ActiveState)"
data_mtime=$(ct stat -c %Y /var/lib/pimainteno/store/data.mdb)
page=$(curl -s --max-time 10 -w '\n%{http_code}' "$DURL/" || true)
expect_eq "curl the overview from the host: 200" 200 "$(tail -1 <<<"$page")"
expect_in "  ... it shows the project" weather "$page"
expect_eq "  ... the first request started the service" active "$(prop $DSVC ActiveState)"
expect_eq "  ... as pi" pi "$(ct stat -c %U "/proc/$(prop $DSVC MainPID)")"
timer=$(curl -s --max-time 10 "$DURL/api/v1/overview" | python3 -c 'import json, sys; print(json.load(sys.stdin)["timer"]["active"])' 2>&1 || true)
expect_eq "  ... it asks systemd (systemctl) from its sandbox (/api/v1/overview: the timer's state)" \
	"$(prop pimainteno.timer ActiveState) ($(prop pimainteno.timer SubState))" "$timer"
expect_eq "  ... /healthz" 200 "$(http_code "$DURL/healthz")"

# The schedule on the dashboard is systemd's: the same last and next run as
# `systemctl show pimainteno.timer` (and `list-timers`). A drop-in makes the
# enabled timer elapse within seconds, so that it has a last run too.
ct mkdir -p /etc/systemd/system/pimainteno.timer.d
ct_write /etc/systemd/system/pimainteno.timer.d/zz-systest.conf <<'EOF'
[Timer]
OnCalendar=
OnCalendar=*-*-* *:*:00/15
RandomizedDelaySec=0
AccuracySec=1s
EOF
ct systemctl daemon-reload
# Scenario 4 stops the timer; run alone after it, it is enabled but not started.
ct systemctl start pimainteno.timer || true
for i in $(seq 1 80); do
	case "$(prop pimainteno.timer LastTriggerUSec)" in "" | n/a) sleep 0.5 ;; *) break ;; esac
done
ct rm /etc/systemd/system/pimainteno.timer.d/zz-systest.conf
ct systemctl daemon-reload
say "    systemctl show pimainteno.timer: $(ct systemctl show -p LastTriggerUSec,NextElapseUSecRealtime pimainteno.timer | tr '\n' ' ')"
# sd_secs PROPERTY: systemctl's human time as Unix seconds (date in the
# container, which has systemctl's zone).
sd_secs() {
	local v
	v=$(prop pimainteno.timer "$1")
	# date -d "" is today's midnight: an unset time must not pass for one.
	case "$v" in "" | n/a) echo "unset: '$v'"; return ;; esac
	ct date -d "$v" +%s 2>/dev/null || echo "unreadable: '$v'"
}
# dash_secs FIELD: the dashboard's /api/v1/overview timer.FIELD as Unix seconds.
dash_secs() {
	local v
	v=$(curl -s --max-time 10 "$DURL/api/v1/overview" | python3 -c 'import json, sys; print(json.load(sys.stdin)["timer"][sys.argv[1]])' "$1" 2>&1 || true)
	date -d "$v" +%s 2>/dev/null || echo "not a time: '$v'"
}
check "  ... the timer has run (LastTriggerUSec)" test -n "$(prop pimainteno.timer LastTriggerUSec | grep -vx 'n/a')"
expect_eq "  ... the dashboard's next run is systemctl show's NextElapseUSecRealtime" "$(sd_secs NextElapseUSecRealtime)" "$(dash_secs next)"
expect_eq "  ... its last run is LastTriggerUSec" "$(sd_secs LastTriggerUSec)" "$(dash_secs last)"
page=$(curl -s --max-time 10 "$DURL/" || true)
expect_not_in "  ... the page does not say \"not scheduled\"" "not scheduled" "$page"
expect_eq "  ... the store is only read (data.mdb unchanged)" "$data_mtime" "$(ct stat -c %Y /var/lib/pimainteno/store/data.mdb)"

first=$(prop $DSVC InvocationID)
wait_inactive
expect_eq "idle_exit = 3s: the service exits" inactive "$(prop $DSVC ActiveState)"
expect_eq "  ... with success" success "$(prop $DSVC Result)"
expect_eq "  ... the socket is still listening" listening "$(prop $DSOCK SubState)"
expect_eq "curl again: 200" 200 "$(http_code "$DURL/")"
check "  ... from a new start of the service" test "$(prop $DSVC InvocationID)" != "$first"

# -- a crash loop: the service dies of SIGSEGV at every start, while
# visitors keep coming (each waits 1 s for an answer that does not come).
ct mkdir -p $DDROP
ct_write $DDROP/zz-crash.conf <<'EOF'
[Service]
ExecStart=
ExecStart=/bin/sh -c 'kill -SEGV $$'
EOF
ct systemctl daemon-reload
ct systemctl stop $DSVC 2>/dev/null
states=
for i in $(seq 1 12); do
	curl -s -o /dev/null --max-time 1 "$DURL/" || true
	states="$states $(prop $DSOCK ActiveState)/$(prop $DSOCK Result)"
done
restarts=$(prop $DSVC NRestarts)
say "    the socket while the service crashed ($restarts restarts):$(tr ' ' '\n' <<<"${states# }" | sort | uniq -c | tr '\n' ' ' | tr -s ' ')"
check "a crash loop: the service crashed again and again ($restarts restarts)" test "${restarts:-0}" -ge 3
expect_not_in "  ... the socket never failed" failed "$states"
expect_not_in "  ... and never hit a limit" limit "$states"
ct rm $DDROP/zz-crash.conf
ct systemctl daemon-reload
expect_eq "  ... fixed: the next visitor gets the dashboard, no reset-failed needed" 200 "$(http_code "$DURL/")"
expect_eq "  ... the socket is fine" "active/success" "$(prop $DSOCK ActiveState)/$(prop $DSOCK Result)"

# The same crash with systemd's default limits and no Restart= (Cockpit's
# units): the socket ends failed and refuses everyone. What the unit's
# StartLimitIntervalSec=0 and Restart=on-failure are there for.
ct_write $DDROP/zz-crash.conf <<'EOF'
[Unit]
StartLimitIntervalSec=10s
[Service]
ExecStart=
ExecStart=/bin/sh -c 'kill -SEGV $$'
Restart=no
EOF
ct systemctl daemon-reload
ct systemctl stop $DSVC 2>/dev/null
for i in 1 2 3; do curl -s -o /dev/null --max-time 1 "$DURL/" || true; done
expect_eq "control: with systemd's default limits the socket ends failed" failed "$(prop $DSOCK ActiveState)"
say "    (socket result: $(prop $DSOCK Result))"
expect_eq "  ... and refuses connections" 000 "$(http_code "$DURL/")"
ct rm $DDROP/zz-crash.conf
ct systemctl daemon-reload
ct systemctl reset-failed $DSOCK $DSVC
ct systemctl start $DSOCK
expect_eq "  ... until reset-failed and a start" 200 "$(http_code "$DURL/")"

# -- off loopback: a password is required
ct systemctl stop $DSVC 2>/dev/null
ct_write /etc/pimainteno/conf.d/80-web.toml <<'EOF'
[web]
host = "0.0.0.0"
idle_exit = "3s"
EOF
ct systemctl daemon-reload
expect_in "host 0.0.0.0 without a password file: the generator says what to do" \
	"openssl passwd -6 | sudo install -m 600 /dev/stdin /etc/pimainteno/web-password" \
	"$(ct journalctl --no-pager -t pimainteno-system-generator -o cat)"
ct systemctl restart $DSOCK
expect_eq "  ... the socket listens on 0.0.0.0:8740" "0.0.0.0:8740" "$(prop $DSOCK Listen | awk '{print $1}')"
expect_eq "  ... the dashboard refuses: 503" 503 "$(http_code "$DURL/")"
wait_inactive
refused=$(prop $DSVC InvocationID)
expect_eq "  ... exits 78" 78 "$(prop $DSVC ExecMainStatus)"
expect_in "  ... saying why and what to do" "requires a password" \
	"$(ct journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID="$refused")"
sleep 4
expect_eq "  ... and is not restarted (RestartPreventExitStatus=78)" "$refused" "$(prop $DSVC InvocationID)"
expect_eq "  ... the socket still listens" listening "$(prop $DSOCK SubState)"
# What the warning says, with the host's openssl (the container has none).
openssl passwd -6 -stdin <<<'pi-dashboard-pw' | ct sh -c 'install -m 600 /dev/stdin /etc/pimainteno/web-password'
ct systemctl daemon-reload
# (systemctl show prints LoadCredential= as "[unprintable]" in 252.)
expect_in "with a password file: the generator hands it over as a credential" \
	"LoadCredential=web-password:/etc/pimainteno/web-password" "$(ct systemctl cat $DSVC)"
ct systemctl reset-failed $DSVC
expect_eq "  ... no credentials: 401" 401 "$(http_code "$DURL/")"
expect_eq "  ... a wrong password: 401" 401 "$(http_code "$DURL/" -u admin:wrong)"
# The file is root's alone (0600): the service account read it as the credential.
expect_eq "  ... the right one: 200" 200 "$(http_code "$DURL/" -u admin:pi-dashboard-pw)"

# Back to loopback, the default idle time.
ct systemctl stop $DSVC 2>/dev/null
ct rm /etc/pimainteno/conf.d/80-web.toml /etc/pimainteno/web-password
ct systemctl daemon-reload
ct systemctl restart $DSOCK
expect_eq "back on 127.0.0.1: no password" 200 "$(http_code "$DURL/")"

# -- the benchmark: cold start through the socket, against a do-nothing
# floor started by the same units with the same sandbox (README "Benchmarks").
cp "$ROOT/target/release/examples/floor-responder" "$(ct_root)/usr/local/bin/"
python3 tests/system/bench_dashboard.py "$CT_PID" "$DURL/" --floor /usr/local/bin/floor-responder \
	--rounds "${PM_SYSTEST_BENCH_ROUNDS:-20}" 2>&1 >"$WORK/bench-dashboard.json" | sed 's/^/    /'
bench() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/bench-dashboard.json" "$1"; }
cold=$(bench 'r["pm-dashboard"]["median_ms"]')
ratio=$(bench 'r["ratio"]')
rss=$(bench 'r["pm-dashboard"]["peak_rss_kib"]')
expect_eq "cold start: every round answered 200" "${PM_SYSTEST_BENCH_ROUNDS:-20}" "$(bench 'r["pm-dashboard"]["answered"]')"
check "  ... within 1.3x of the floor ($ratio)" python3 -c "import sys; sys.exit(not float('$ratio') <= 1.3)"
# Reported, not checked: the floor under this sandbox alone takes 35-40 ms
# on the development machine (README "Benchmarks").
say "    cold start median $cold ms; the issue's target: at most 40 ms (half of Cockpit's 79 ms)"
check "peak RSS $rss KiB < 6 MB" test "$rss" -gt 0 -a "$rss" -lt 6000
ct systemctl stop $DSVC 2>/dev/null
expect_eq "no unit is left failed" "" "$(ct systemctl --failed --plain --no-legend)"
fi

# ---------------------------------------------------------------- 5. upgrade, remove, purge
if want 5; then

section "5. upgrade, remove, purge"
out=$(ct "${APT[@]}" install "/root/debs/$(basename "$DEB_UPGRADE")" 2>&1) && rc=0 || rc=$?
expect_eq "upgrade to ${VERSION}-2 (offline)" 0 "$rc"
[ "$rc" -eq 0 ] || printf '%s\n' "$out" | tail -20
expect_eq "  ... installed" "${VERSION}-2" "$(ct dpkg-query -W -f '${Version}' pimainteno)"
expect_eq "  ... the timer is still enabled" enabled "$(ct systemctl is-enabled pimainteno.timer || true)"
if want 9; then
	expect_eq "  ... the dashboard's socket too" enabled "$(ct systemctl is-enabled pimainteno-dashboard.socket || true)"
	expect_eq "  ... and the dashboard answers" 200 "$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' http://127.0.0.1:8740/ || true)"
fi
expect_eq "  ... and active" active "$(ct systemctl is-active pimainteno.timer || true)"
check "  ... the configuration fragments are kept" ct test -f /etc/pimainteno/conf.d/50-weather.toml
check "  ... the store is kept" ct test -f /var/lib/pimainteno/store/data.mdb
check "  ... so the next run is a cache hit" ct systemctl start pimainteno.service
expect_cache_hit "  ... the store survived the upgrade"

out=$(ct "${APT[@]}" remove pimainteno 2>&1) && rc=0 || rc=$?
expect_eq "apt remove pimainteno" 0 "$rc"
check "  ... removes the binaries" sh -c "! nsenter -t $CT_PID -a test -e /usr/bin/pm-summarize"
expect_eq "  ... stops the timer" inactive "$(ct systemctl is-active pimainteno.timer || true)"
if want 9; then
	expect_eq "  ... stops the dashboard's socket" inactive "$(ct systemctl is-active pimainteno-dashboard.socket || true)"
	expect_eq "  ... and its service" inactive "$(ct systemctl is-active pimainteno-dashboard.service || true)"
	expect_eq "  ... nothing listens on 8740 any more" 000 "$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' http://127.0.0.1:8740/ || true)"
fi
check "  ... keeps the store" ct test -f /var/lib/pimainteno/store/data.mdb
check "  ... keeps the configuration" ct test -f /etc/pimainteno/pimainteno.toml
check "  ... keeps the user" ct getent passwd pimainteno
expect_eq "  ... no unit failed" "" "$(ct systemctl --failed --plain --no-legend)"

out=$(ct "${APT[@]}" purge pimainteno 2>&1) && rc=0 || rc=$?
expect_eq "apt purge pimainteno" 0 "$rc"
check "  ... removes the state directory" sh -c "! nsenter -t $CT_PID -a test -e /var/lib/pimainteno"
check "  ... removes the user" sh -c "! nsenter -t $CT_PID -a getent passwd pimainteno"
check "  ... removes the shipped configuration" sh -c "! nsenter -t $CT_PID -a test -e /etc/pimainteno/pimainteno.toml"
check "  ... keeps the administrator's fragments" ct test -f /etc/pimainteno/conf.d/50-weather.toml
check "  ... keeps the project and its summary" ct test -f /home/pi/weather/codex.md
expect_eq "  ... dpkg forgets the package" "" "$(ct dpkg-query -W -f '${Status}' pimainteno 2>/dev/null || true)"
expect_eq "  ... the timer unit is gone" not-found "$(ct systemctl show -p LoadState --value pimainteno.timer)"
expect_eq "no unit is left failed" "" "$(ct systemctl --failed --plain --no-legend)"
expect_eq "the system is still running (not degraded)" running "$(ct systemctl is-system-running || true)"

poweroff
fi

# ---------------------------------------------------------------- 6c. arm64 boot (opt-in)

if [ -n "${PM_SYSTEST_ARM64_BOOT:-}" ]; then
	section "6c. arm64: boot bookworm under qemu-user, install, summarize"
	. tests/system/arm64-boot.sh
else
	say ""
	say "(a full arm64 boot under emulation: PM_SYSTEST_ARM64_BOOT=1 tests/system/run.sh)"
fi
