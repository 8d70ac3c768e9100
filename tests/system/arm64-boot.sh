# Sourced by tests/system/run.sh when PM_SYSTEST_ARM64_BOOT=1: a whole arm64
# Debian bookworm booted under qemu-user (binfmt_misc), the arm64 package
# installed offline, and one project summarized by the service, as on a Pi.
#
# qemu-user does not emulate everything systemd's sandboxing asks of the
# kernel: PrivateUsers= (user namespaces) fails with 214/SETSCHEDULE or
# 226/NAMESPACE, and a seccomp SystemCallFilter= is not enforced at all (the
# filter is for aarch64, the kernel sees x86-64 system calls from qemu). So
# the service gets a drop-in turning PrivateUsers= off here; on a real Pi the
# shipped unit runs as it is.

PRISTINE_ARM64=$(rootfs arm64)
BOOT_TIMEOUT=600 boot "$PRISTINE_ARM64"
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
poweroff
