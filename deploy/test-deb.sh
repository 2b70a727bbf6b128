#!/usr/bin/env bash
# Tests the Debian package: builds it with deploy/build-deb.sh (or takes TANDEM_DEB=path.deb),
# installs it into a scratch root with `dpkg --root --force-script-chrootless` (so the real
# postinst runs, against that root through DPKG_ROOT), then checks that everything the units
# reference exists there: ExecStart/ExecStartPre binaries, users and groups (from sysusers.d),
# directories (from tmpfiles.d); that no file lands in /etc; that the man pages and completions
# are usable; and runs `systemd-analyze verify` on the installed units. Exits non-zero on the
# first failed check; prints "N passed, 0 failed" at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; echo "$passed passed, 1 failed"; exit 1; }

if [ -n "${TANDEM_DEB:-}" ]; then
    deb="$TANDEM_DEB"
else
    deb="$(deploy/build-deb.sh | tail -n 1)"
fi
[ -f "$deb" ] || fail "no package at '$deb'"
echo "package: $deb"

root="$(mktemp -d "${TMPDIR:-/tmp}/tandem-deb-root.XXXXXX")"
trap 'rm -rf "$root" "$root.dpkg.log" "$root.units"' EXIT

# 1. The package's own contents.
contents="$(dpkg-deb --contents "$deb")"
for f in usr/bin/ipctl usr/bin/tandem-membership usr/bin/tandem-resource-agent \
    lib/systemd/system/tandem-membership.service lib/systemd/system/tandem-resource-agent.service \
    usr/lib/sysusers.d/tandem.conf usr/lib/tmpfiles.d/tandem.conf \
    usr/share/doc/tandem/examples/cluster.yaml usr/share/man/man1/ipctl.1.gz \
    usr/share/man/man1/ipctl-status.1.gz usr/share/man/man8/tandem-membership.8.gz \
    usr/share/man/man8/tandem-resource-agent.8.gz usr/share/bash-completion/completions/ipctl \
    usr/share/zsh/vendor-completions/_ipctl usr/share/fish/vendor_completions.d/ipctl.fish \
    usr/share/doc/tandem/QUERYING.md usr/share/tandem/proto/tandem/membership/v1/membership.proto \
    usr/share/tandem/proto/tandem/agent/v1/agent.proto; do
    grep -q " \./$f\$" <<<"$contents" || fail "$f is not in the package"
done
ok "package holds the binaries, units, sysusers/tmpfiles files, example, man pages, completions, protos"
if grep -q ' \./etc/.' <<<"$contents"; then
    fail "the package ships files under /etc (a live config with placeholder addresses?)"
fi
dpkg-deb --info "$deb" conffiles >/dev/null 2>&1 && fail "the package declares conffiles"
ok "nothing under /etc, no conffiles"

# 2. Install into the scratch root. The scratch root has no libc6 etc. registered, hence
# --force-depends; the maintainer scripts run on the host with DPKG_ROOT set to the root.
# /etc exists on every real system; systemd-sysusers writes passwd and group there.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status"
host_before="$(cat /etc/passwd /etc/group | sha256sum)"
dpkg --root="$root" --force-not-root --force-script-chrootless --force-depends \
    --log=/dev/null -i "$deb" >/dev/null 2>"$root.dpkg.log" || {
    cat "$root.dpkg.log" >&2
    fail "dpkg -i into $root"
}
rm -f "$root.dpkg.log"
ok "dpkg --root installed the package and ran postinst"
[ "$(cat /etc/passwd /etc/group | sha256sum)" = "$host_before" ] ||
    fail "postinst changed the host's /etc/passwd or /etc/group instead of the root's"
ok "the host's users and groups were not touched"

# 3. Everything the units reference exists in the root.
has_user() { grep -q "^$1:" "$root/etc/passwd"; }
has_group() { grep -q "^$1:" "$root/etc/group"; }
for unit in "$root"/lib/systemd/system/tandem-*.service; do
    name="$(basename "$unit")"
    while IFS='=' read -r key value; do
        case "$key" in
        ExecStart | ExecStartPre | ExecStartPost | ExecStop | ExecReload)
            bin="${value%% *}"
            bin="${bin#[-@+!:]}"
            [ -x "$root$bin" ] || fail "$name: $key binary $bin is not in the package"
            ok "$name: $key $bin exists"
            ;;
        User)
            has_user "$value" || fail "$name: User=$value was not created by sysusers"
            ok "$name: user $value exists"
            ;;
        Group | SupplementaryGroups)
            for g in $value; do
                has_group "$g" || fail "$name: $key=$g was not created by sysusers"
                ok "$name: group $g exists"
            done
            ;;
        ReadWritePaths)
            for d in $value; do
                [ -d "$root${d#-}" ] || fail "$name: ReadWritePaths=$d was not created by tmpfiles"
                ok "$name: directory $d exists"
            done
            ;;
        StateDirectory)
            # systemd creates /var/lib/<dir> at start; its parent must exist.
            for d in $value; do
                parent="/var/lib/${d%%/*}"
                [ -d "$root$parent" ] || fail "$name: $parent (parent of StateDirectory=$d) missing"
                ok "$name: $parent exists"
            done
            ;;
        esac
    done < <(grep -E '^[A-Za-z]+=' "$unit")
done
has_group tandem-admin || fail "group tandem-admin (allowed to change the cluster) missing"
grep -q '^tandem:.*tandem-agent' "$root/etc/group" ||
    fail "tandem-agent is not a member of group tandem (it must reach membership.sock)"
ok "group tandem-admin exists; tandem-agent is in group tandem"
# Compare ids, not names: stat would name the gid from the host's group database.
gid="$(awk -F: '$1 == "tandem" { print $3 }' "$root/etc/group")"
mode="$(stat -c '%a %u %g' "$root/run/tandem")"
[ "$mode" = "1770 0 $gid" ] || fail "/run/tandem is '$mode' (mode uid gid), want '1770 0 $gid'"
ok "/run/tandem is 1770 root:tandem (gid $gid of the root's group database)"

# 4. The installed tools work.
"$root/usr/bin/ipctl" --version >/dev/null || fail "ipctl --version"
# Without --node: this scratch root is not a node (no nginx script, no key, no unit), and
# --node makes what this machine lacks an error.
"$root/usr/bin/ipctl" check-config \
    "$root/usr/share/doc/tandem/examples/cluster.yaml" >/dev/null 2>&1 ||
    fail "the example cluster.yaml does not pass ipctl check-config"
ok "installed ipctl runs and accepts the example configuration"
for page in "$root"/usr/share/man/man1/*.1.gz "$root"/usr/share/man/man8/*.8.gz; do
    gzip -t "$page" || fail "$page is not valid gzip"
    zcat "$page" | head -n 5 | grep -q '^\.TH' || fail "$page is not a man page"
done
ok "man pages are gzipped roff"
bash -n "$root/usr/share/bash-completion/completions/ipctl" || fail "bash completion has syntax errors"
ok "bash completion parses"

# 5. systemd's own check of the units against the installed binaries. systemd-analyze verify
# (252) looks ExecStart= binaries up on the host's file system, so the units are copied with
# /usr/bin/ pointed into the root: a missing or non-executable binary then fails the check.
# The units' Documentation=man:...(8) pages are checked too: MANPATH points into the root.
if command -v systemd-analyze >/dev/null 2>&1; then
    units="$root.units"
    mkdir -p "$units"
    for unit in "$root"/lib/systemd/system/tandem-*.service; do
        sed "s#/usr/bin/#$root/usr/bin/#g" "$unit" >"$units/$(basename "$unit")"
    done
    out="$(MANPATH="$root/usr/share/man" systemd-analyze verify "$units"/*.service 2>&1)" ||
        fail "systemd-analyze verify:
$out"
    [ -z "$out" ] || fail "systemd-analyze verify warns:
$out"
    rm -rf "$units"
    ok "systemd-analyze verify accepts both units with the packaged binaries"
else
    echo "skipped: systemd-analyze not installed"
fi

# 6. Removal and purge run prerm/postrm against the root; state survives on purpose.
dpkg --root="$root" --force-not-root --force-script-chrootless --force-depends \
    --log=/dev/null --purge tandem >/dev/null 2>&1 || fail "dpkg --purge tandem"
[ ! -e "$root/usr/bin/ipctl" ] || fail "ipctl is still there after purge"
[ -d "$root/var/lib/tandem" ] || fail "/var/lib/tandem (incarnation counters) was removed by purge"
ok "purge removes the files and keeps /var/lib/tandem"

echo "$passed passed, 0 failed"
