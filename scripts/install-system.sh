#!/usr/bin/env bash
# Install bistouryd as a systemd service (`make install-system`, as root).
#
# Creates the system user and group "bistoury", a virtual environment in /opt/bistoury/venv
# holding a regular (non-editable) install of this repository, /etc/bistoury with the
# example configuration and secrets file (never overwriting existing ones), the unit in
# /etc/systemd/system and, on systemd >= 253, its notify-reload drop-in.
# Safe to run again: that upgrades the code and the unit and keeps the configuration.
# See docs/systemd.md.
#
# Environment: PYTHON  interpreter for the venv (default /usr/bin/python3, >= 3.10).
set -euo pipefail

PREFIX=/opt/bistoury
VENV="$PREFIX/venv"
CONF_DIR=/etc/bistoury
UNIT_DIR=/etc/systemd/system
UNIT=bistouryd.service
DROPIN=bistouryd-notify-reload.conf
BIN_DIR=/usr/local/bin
SERVICE_USER=bistoury
PYTHON="${PYTHON:-/usr/bin/python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The venv and the unit must be readable by the service user whatever root's umask is;
# the secrets file gets its mode explicitly.
umask 022

die() {
    printf 'ERROR: %s\n' "$1" >&2
    shift
    local hint
    for hint in "$@"; do
        printf '  → %s\n' "$hint" >&2
    done
    exit 1
}

warn() {
    printf 'WARNING: %s\n' "$1" >&2
    shift
    local hint
    for hint in "$@"; do
        printf '  → %s\n' "$hint" >&2
    done
}

step() {
    printf '==> %s\n' "$*"
}

# ---- preconditions ------------------------------------------------------------------

if [[ $EUID -ne 0 ]]; then
    die "install-system must run as root (it creates a user and writes to /opt, /etc and /usr/local)" \
        "run: sudo make install-system"
fi

for tool in systemctl getent groupadd useradd install tar; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' was not found; this installer needs systemd and the shadow utilities" \
            "on hosts without systemd, run bistouryd --daemon instead (see docs/systemd.md)"
done

for file in systemd/$UNIT systemd/$DROPIN etc/config.yaml etc/bistoury.env.example pyproject.toml; do
    [[ -f "$REPO/$file" ]] || die "$REPO/$file is missing" "run this script from a complete checkout"
done

command -v "$PYTHON" >/dev/null 2>&1 ||
    die "Python interpreter '$PYTHON' was not found" \
        "install it (Debian: apt install python3 python3-venv) or set PYTHON=/path/to/python3"
PYTHON="$(command -v "$PYTHON")"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); bistoury needs 3.10 or newer" \
        "set PYTHON=/path/to/python3.10+"
# The venv links to its interpreter: one under a home directory would be hidden from the
# service by ProtectHome=yes (and usually unreadable by the bistoury user), e.g. pyenv's.
python_real="$(readlink -f "$PYTHON")"
case "$python_real" in
    /home/* | /root/* | /run/user/*)
        die "$PYTHON resolves to $python_real, inside a home directory the service cannot see" \
            "use a system-wide interpreter: PYTHON=/usr/bin/python3 make install-system"
        ;;
esac
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot create virtual environments (module venv or ensurepip missing)" \
        "Debian/Ubuntu: apt install python3-venv"

# ---- user and group -----------------------------------------------------------------

if getent group "$SERVICE_USER" >/dev/null; then
    step "group $SERVICE_USER exists"
else
    step "creating system group $SERVICE_USER"
    groupadd --system "$SERVICE_USER"
fi

if getent passwd "$SERVICE_USER" >/dev/null; then
    step "user $SERVICE_USER exists"
else
    nologin="$(command -v nologin || true)"
    for candidate in /usr/sbin/nologin /sbin/nologin; do
        [[ -n "$nologin" ]] && break
        [[ -x "$candidate" ]] && nologin="$candidate"
    done
    step "creating system user $SERVICE_USER (no login shell, no home directory)"
    useradd --system --gid "$SERVICE_USER" --no-create-home --home-dir /nonexistent \
        --shell "${nologin:-/bin/false}" --comment "Bistoury trading daemon" "$SERVICE_USER"
fi

# ---- code -----------------------------------------------------------------------------

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    step "virtual environment $VENV exists"
else
    step "creating virtual environment $VENV with $PYTHON"
    install -d -m 0755 "$PREFIX"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Build from a copy so that running as root leaves no root-owned build/ or *.egg-info
# in the checkout.
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
tar -C "$REPO" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./.demo --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.mypy_cache --exclude=.ruff_cache --exclude=./bench/results . |
    tar -C "$workdir" -xf -

step "installing bistoury into $VENV (pip; this needs network access)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# psutil >= 7.1 identifies a process by its start time since boot: older versions read
# /proc/stat, which the unit's ProcSubset=pid hides, and fail on every psutil.Process().
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    --no-cache-dir "$workdir" 'psutil>=7.1'
"$VENV/bin/bistouryd" --version

for cmd in bistouryctl bistoury; do
    step "linking $BIN_DIR/$cmd -> $VENV/bin/$cmd"
    ln -sfn "$VENV/bin/$cmd" "$BIN_DIR/$cmd"
done

# ---- configuration ------------------------------------------------------------------

# root owns the directory and files, group bistoury may read them: the daemon cannot
# rewrite its own configuration. Mode 0750 is the unit's ConfigurationDirectoryMode.
install -d -o root -g "$SERVICE_USER" -m 0750 "$CONF_DIR"

install_once() {
    local src="$1" dest="$2"
    if [[ -e "$dest" ]]; then
        step "keeping existing $dest"
    else
        step "installing $dest (root:$SERVICE_USER 0640)"
        install -o root -g "$SERVICE_USER" -m 0640 "$src" "$dest"
    fi
}
install_once "$REPO/etc/config.yaml" "$CONF_DIR/config.yaml"
install_once "$REPO/etc/bistoury.env.example" "$CONF_DIR/bistoury.env"

env_mode="$(stat -c '%a' "$CONF_DIR/bistoury.env")"
if [[ "$env_mode" =~ [1-7]$ ]]; then
    warn "$CONF_DIR/bistoury.env is readable by every user (mode $env_mode) and holds secrets" \
        "chown root:$SERVICE_USER $CONF_DIR/bistoury.env && chmod 0640 $CONF_DIR/bistoury.env"
fi

# ---- systemd --------------------------------------------------------------------------

step "installing $UNIT_DIR/$UNIT"
install -m 0644 "$REPO/systemd/$UNIT" "$UNIT_DIR/$UNIT"

systemd_version="$(systemctl --version | awk 'NR == 1 { print $2 }')"
systemd_version="${systemd_version%%[!0-9]*}"
dropin_dir="$UNIT_DIR/$UNIT.d"
if [[ -n "$systemd_version" ]] && ((systemd_version >= 253)); then
    step "systemd $systemd_version: installing $dropin_dir/$DROPIN (Type=notify-reload)"
    install -d -m 0755 "$dropin_dir"
    install -m 0644 "$REPO/systemd/$DROPIN" "$dropin_dir/$DROPIN"
else
    step "systemd ${systemd_version:-of unknown version} < 253: keeping Type=notify with ExecReload"
    # Left over from a newer systemd it would clear ExecReload and break reloading.
    rm -f "$dropin_dir/$DROPIN"
    rmdir "$dropin_dir" 2>/dev/null || true
fi

running=no
if [[ -d /run/systemd/system ]]; then
    step "systemctl daemon-reload"
    systemctl daemon-reload
    systemctl is-active --quiet "$UNIT" && running=yes
else
    warn "systemd is not running on this host (no /run/systemd/system); skipped daemon-reload" \
        "the unit is installed and will be picked up when systemd starts"
fi

# ---- next steps ------------------------------------------------------------------------

operator="${SUDO_USER:-}"
if [[ -z "$operator" || "$operator" == root ]]; then
    operator='<your user>'
fi
cat <<EOF

Bistoury is installed.

Next steps:
  1. Edit the configuration:      $CONF_DIR/config.yaml
     and the secrets (API keys):  $CONF_DIR/bistoury.env
     check them with:             bistouryctl config check $CONF_DIR/config.yaml
  2. Start it now and at boot:    systemctl enable --now bistouryd
  3. Let your user control it:    usermod -aG $SERVICE_USER $operator
     (then log out and back in, or run: newgrp $SERVICE_USER)
  4. Check it:                    bistouryctl status
     Logs:                        journalctl -u bistouryd -f
EOF
if [[ $running == yes ]]; then
    cat <<EOF

bistouryd is running the previous version; restart it when convenient:
  systemctl restart bistouryd
EOF
fi
