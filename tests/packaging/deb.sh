#!/usr/bin/env bash
# The deb on this machine, for real: install, every file where the README
# says, the shipped config valid, the unit verified; remove (the conffile
# stays), purge (all gone); lintian without errors.
set -uo pipefail
deb=${1:?usage: deb.sh PACKAGE.deb}
pass=0 fail=0
check() { # description, command...
    local what=$1; shift
    if "$@" >/tmp/rackside-pkgtest.out 2>&1; then pass=$((pass + 1)); echo "ok: $what"
    else fail=$((fail + 1)); echo "FAIL: $what"; sed 's/^/    /' /tmp/rackside-pkgtest.out; fi
}
absent() { ! test -e "$1" && ! test -L "$1"; }

if dpkg -s rackside >/dev/null 2>&1; then echo "rackside is already installed here; refusing to test over it"; exit 1; fi
check "dpkg -i" dpkg -i "$deb"
for f in /usr/bin/rackside-agent /usr/bin/rackside-hook /usr/bin/rackside-controller /etc/rackside/agent.toml \
         /lib/systemd/system/rackside-agent.service /usr/share/man/man8/rackside-agent.8.gz \
         /usr/share/man/man8/rackside-hook.8.gz /usr/share/man/man1/rackside-controller.1.gz \
         /usr/share/bash-completion/completions/rackside-agent \
         /usr/share/bash-completion/completions/rackside-controller \
         /usr/share/doc/rackside/copyright; do
    check "installed: $f" test -e "$f"
done
check "hook linked into qemu.d" test "$(readlink /etc/libvirt/hooks/qemu.d/rackside-hook)" = /usr/bin/rackside-hook
check "hook runs from qemu.d" /etc/libvirt/hooks/qemu.d/rackside-hook --version
check "state directory" test -d /var/lib/rackside
check "conffile registered" sh -c "dpkg-query -W -f='\${Conffiles}' rackside | grep -q /etc/rackside/agent.toml"
check "shipped config is valid" rackside-agent check-config --config /etc/rackside/agent.toml
# It may hold the PIN's hash: an offline guess needs the hash.
check "config not readable by others" test "$(stat -c %a:%U:%G /etc/rackside/agent.toml)" = 640:root:root
# verify also reads the units ours is ordered after; a complaint about one
# of them (libvirt from bookworm-backports says Type=notify-reload, newer
# than Debian 12's systemd) is not about ours: only lines naming no other
# unit file, or naming ours, count.
check "unit verifies" sh -c "systemd-analyze verify /lib/systemd/system/rackside-agent.service 2>&1 | tee /dev/stderr | grep -v 'Failed to connect to bus' | awk '!/^\/[^:]+:[0-9]+: / || /rackside-agent/' | { ! grep -q .; }"
check "man page renders" sh -c "man -l /usr/share/man/man8/rackside-agent.8.gz | grep -q 'management line'"
check "controller runs" rackside-controller --version
check "controller's man page renders" sh -c "man -l /usr/share/man/man1/rackside-controller.1.gz | grep -q 'console server'"

echo "# edited by the operator" >> /etc/rackside/agent.toml
check "dpkg -r" dpkg -r rackside
check "remove keeps the edited conffile" grep -q "edited by the operator" /etc/rackside/agent.toml
check "remove takes the binaries" absent /usr/bin/rackside-agent
check "remove takes the controller" absent /usr/bin/rackside-controller
check "remove takes the hook" absent /etc/libvirt/hooks/qemu.d/rackside-hook
check "dpkg -P" dpkg -P rackside
check "purge takes the config" absent /etc/rackside
check "purge takes the state" absent /var/lib/rackside
check "nothing of the package left" sh -c "! dpkg -s rackside 2>/dev/null | grep -q '^Status: install'"

# lintian: errors fail; the warnings we accept are listed in packaging/README.md.
check "lintian: no errors" sh -c "lintian --fail-on error --suppress-tags-from-file packaging/lintian-accepted '$deb'"
lintian --suppress-tags-from-file /dev/null "$deb" 2>/dev/null | sed 's/^/lintian: /' || true

echo "test result: $( [ $fail = 0 ] && echo ok || echo FAILED ). $pass passed; $fail failed; 0 ignored"
[ $fail = 0 ]
