#!/usr/bin/env bash
# The rpm cannot be installed on Debian; its file list and scriptlets are
# checked against the deb's.
set -uo pipefail
rpmf=${1:?usage: rpm.sh PACKAGE.rpm PACKAGE.deb}
deb=${2:?usage: rpm.sh PACKAGE.rpm PACKAGE.deb}
pass=0 fail=0
check() {
    local what=$1; shift
    if "$@" >/tmp/rackside-pkgtest.out 2>&1; then pass=$((pass + 1)); echo "ok: $what"
    else fail=$((fail + 1)); echo "FAIL: $what"; sed 's/^/    /' /tmp/rackside-pkgtest.out; fi
}
# Files (not directories) of each package; the unit's directory differs by
# design (/lib on Debian, /usr/lib on rpm distributions).
rpm -qlp "$rpmf" 2>/dev/null | sed 's|^/usr/lib/systemd/|/lib/systemd/|' | sort > /tmp/rackside-rpm.files
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' | grep -v changelog.Debian.gz | sort > /tmp/rackside-deb.files
check "same files as the deb" diff -u /tmp/rackside-deb.files <(grep -v -x -e /etc/rackside -e /var/lib/rackside /tmp/rackside-rpm.files)
check "config is %config(noreplace)" sh -c "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$rpmf' 2>/dev/null | grep -q '^cn /etc/rackside/agent.toml'"
check "config not readable by others" sh -c "rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' '$rpmf' 2>/dev/null | grep -qx -- '-rw-r----- root:root /etc/rackside/agent.toml'"
scripts=$(rpm -qp --scripts "$rpmf" 2>/dev/null)
for s in "daemon-reload" "enable rackside-agent.service" "check-config" "start rackside-agent.service" \
         "reload libvirtd.service" "stop rackside-agent.service" "disable rackside-agent.service" \
         "try-restart rackside-agent.service" "rm -rf /var/lib/rackside"; do
    check "scriptlets: $s" grep -q -- "$s" <<<"$scripts"
done
check "requires libvirt" sh -c "rpm -qp --requires '$rpmf' 2>/dev/null | grep -q libvirt"
echo "test result: $( [ $fail = 0 ] && echo ok || echo FAILED ). $pass passed; $fail failed; 0 ignored"
[ $fail = 0 ]
