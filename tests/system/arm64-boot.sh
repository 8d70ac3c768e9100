# Sourced by tests/system/run.sh when PM_SYSTEST_ARM64_BOOT=1: a whole arm64
# Debian bookworm booted under qemu-user (binfmt_misc), the arm64 package
# installed offline, and one project summarized by the service, as on a Pi.
#
# qemu-user does not emulate everything systemd's sandboxing asks of the
# kernel: credentials fail (243/CREDENTIALS), PrivateUsers= (user
# namespaces) fails, and a seccomp SystemCallFilter= is not enforced at all
# (the filter is for aarch64, the kernel sees x86-64 system calls from qemu).
# So units get drop-ins turning those off here; on a real Pi the shipped unit
# runs as it is.

# Credentials (LoadCredential=) cannot be set up under qemu-user either
# (243/CREDENTIALS): Debian's own early units lose theirs here.
without_credentials() {
	local u
	for u in systemd-sysusers systemd-tmpfiles-setup systemd-tmpfiles-setup-dev \
		systemd-tmpfiles-clean systemd-sysctl systemd-firstboot procps; do
		mkdir -p "$1/etc/systemd/system/$u.service.d"
		printf '[Service]\nLoadCredential=\n' >"$1/etc/systemd/system/$u.service.d/qemu-user.conf"
	done
}
PRISTINE_ARM64=$(rootfs arm64)
BOOT_TIMEOUT=600 boot "$PRISTINE_ARM64" without_credentials
expect_eq "arm64: the container's systemd is aarch64 code" aarch64 \
	"$(ct uname -m)"
mkdir -p "$(ct_root)/root/debs" "$(ct_root)/root/no-sources.d"
: >"$(ct_root)/root/no-sources.list"
cp "$DEB_ARM64" "$(ct_root)/root/debs/"
out=$(ct "${APT[@]}" install "/root/debs/$(basename "$DEB_ARM64")" 2>&1) && rc=0 || rc=$?
expect_eq "arm64: apt install (offline)" 0 "$rc"
[ "$rc" -eq 0 ] || printf '%s\n' "$out" | tail -20
check "arm64: pimainteno check-config" ct pimainteno check-config
ct useradd --create-home --shell /bin/bash pi
ct runuser -u pi -- sh -c 'set -e; cd /home/pi; git init -q -b main weather; cd weather
	printf "# weather\n" > README.md
	git add . && git -c user.name=Pi -c user.email=pi@example.invalid commit -qm first'
ct_write /etc/pimainteno/conf.d/50-weather.toml <<'EOF'
[llm]
provider = "none"

[service]
user = "pi"

[[project]]
path = "/home/pi/weather"
EOF
ct mkdir -p /etc/systemd/system/pimainteno.service.d
ct_write /etc/systemd/system/pimainteno.service.d/qemu-user.conf <<'EOF'
# qemu-user cannot set up user namespaces for the service.
[Service]
PrivateUsers=no
EOF
ct systemctl daemon-reload
expect_eq "arm64: the generator (aarch64) set User=" pi "$(ct systemctl show -p User --value pimainteno.service)"
check "arm64: systemctl enable --now pimainteno.timer" ct systemctl enable --now pimainteno.timer
check "arm64: systemctl start pimainteno.service" ct systemctl start pimainteno.service
check "arm64: codex.md written" ct test -s /home/pi/weather/codex.md
outcomes=$(invocation_journal pimainteno.service PM_PROJECT=weather | field_values PM_OUTCOME)
expect_in "arm64: journalctl PM_PROJECT=weather" summarized "$outcomes"
# Everything is slower under emulation, shutting down too.
POWEROFF_TIMEOUT=300 poweroff
