#!/usr/bin/env bash
# Provision a SITLab Edge node or gateway on Raspberry Pi OS Bookworm (64-bit),
# Jetson JetPack 6 (Ubuntu 22.04) or plain Debian 12.
#
# Idempotent: every step checks the current state first and prints
# "unchanged" when there is nothing to do, so a second run changes nothing.
# --dry-run prints what would change and changes nothing. --root DIR installs
# into a chroot-like tree (commands that must run inside it use chroot).
#
# Example (node):
#   sudo ./provision.sh --node cam1 --node-config cam1.yaml \
#        --wheel sitlab_edge-0.1.0-py3-none-any.whl \
#        --model-file yolov8n_320_fp32.onnx --credentials ./cam1-creds
# See docs/deployment.md for every option and the file layout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="/"
DRY_RUN=0
ROLE="node"
PLATFORM="auto"
NODE=""
NODE_CONFIG=""
GATEWAY_CONFIG=""
WHEEL=""
SRC=""
MODEL_NAME=""
MODEL_FROM=""
MODEL_FILE=""
CREDENTIALS=""
FORCE_CONFIG=0
SKIP_PACKAGES=0
CHANGES=0

usage() {
    cat <<'EOF'
usage: provision.sh [options]
  --role node|gateway     what to install (default node)
  --node NAME             node instance name, e.g. cam1 (required for a node)
  --node-config FILE      node config (YAML) for that instance
  --gateway-config FILE   gateway config (YAML), for --role gateway
  --wheel FILE | --src DIR
                          the product: a built wheel, or a source checkout
  --model NAME            pull a registry model with `sitlab-models pull`
  --model-from DIR        ... from this local folder instead of the network
  --model-file FILE       or copy this ONNX file as is
  --credentials DIR       files copied to /etc/sitlab/credentials
                          (*.key and password* 0600, others 0640)
  --platform auto|pi|jetson|debian
  --force-config          replace a node config that differs from FILE
                          (by default a config changed remotely is kept)
  --skip-packages         do not touch system packages
  --root DIR              install into DIR instead of /
  --dry-run               print what would change; change nothing
EOF
}

die() { echo "provision.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --role) ROLE="${2:?--role needs a value}"; shift 2 ;;
        --node) NODE="${2:?--node needs a value}"; shift 2 ;;
        --node-config) NODE_CONFIG="${2:?--node-config needs a file}"; shift 2 ;;
        --gateway-config) GATEWAY_CONFIG="${2:?--gateway-config needs a file}"; shift 2 ;;
        --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
        --src) SRC="${2:?--src needs a directory}"; shift 2 ;;
        --model) MODEL_NAME="${2:?--model needs a name}"; shift 2 ;;
        --model-from) MODEL_FROM="${2:?--model-from needs a directory}"; shift 2 ;;
        --model-file) MODEL_FILE="${2:?--model-file needs a file}"; shift 2 ;;
        --credentials) CREDENTIALS="${2:?--credentials needs a directory}"; shift 2 ;;
        --platform) PLATFORM="${2:?--platform needs a value}"; shift 2 ;;
        --force-config) FORCE_CONFIG=1; shift ;;
        --skip-packages) SKIP_PACKAGES=1; shift ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done

# -- argument checks: each names the option, the value and the fix ----------

case "$ROLE" in node|gateway) ;; *) die "--role '$ROLE' is invalid; use node or gateway" ;; esac
case "$PLATFORM" in auto|pi|jetson|debian) ;;
    *) die "--platform '$PLATFORM' is invalid; use auto, pi, jetson or debian" ;; esac
[ -d "$ROOT" ] || die "--root '$ROOT' is not a directory; create it first"
ROOT="$(cd "$ROOT" && pwd)"
if [ "$ROLE" = node ]; then
    [ -n "$NODE" ] || die "--node is missing; name the node instance, e.g. --node cam1"
    [[ "$NODE" =~ ^[a-z0-9][a-z0-9_-]{0,63}$ ]] \
        || die "--node '$NODE' is invalid; use lower-case letters, digits, '-' and '_'"
fi
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "--wheel '$WHEEL' not found"
[ -z "$SRC" ] || [ -f "$SRC/pyproject.toml" ] || die "--src '$SRC' has no pyproject.toml"
[ -z "$WHEEL" ] || [ -z "$SRC" ] || die "give either --wheel or --src, not both"
[ -z "$NODE_CONFIG" ] || [ -f "$NODE_CONFIG" ] || die "--node-config '$NODE_CONFIG' not found"
[ -z "$GATEWAY_CONFIG" ] || [ -f "$GATEWAY_CONFIG" ] \
    || die "--gateway-config '$GATEWAY_CONFIG' not found"
[ -z "$MODEL_FILE" ] || [ -f "$MODEL_FILE" ] || die "--model-file '$MODEL_FILE' not found"
[ -z "$MODEL_FROM" ] || [ -n "$MODEL_NAME" ] || die "--model-from needs --model NAME"
[ -z "$CREDENTIALS" ] || [ -d "$CREDENTIALS" ] || die "--credentials '$CREDENTIALS' is not a directory"
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or add --dry-run to see what would change"
fi

# -- helpers -----------------------------------------------------------------

path() { echo "${ROOT%/}$1"; }           # a target path inside the root
unchanged() { echo "[$1] unchanged: $2"; }
change() {                                # change STEP DESCRIPTION COMMAND...
    local step="$1" what="$2"; shift 2
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then
        echo "[$step] would $what"
        return 0
    fi
    echo "[$step] $what"
    "$@"
}
in_root() {                               # run a command inside the root
    if [ "$ROOT" = / ]; then "$@"; else chroot "$ROOT" "$@"; fi
}
uid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$(path /etc/passwd)" 2>/dev/null || true; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$(path /etc/group)" 2>/dev/null || true; }
same_file() { [ -f "$2" ] && cmp -s "$1" "$2"; }

detect_platform() {
    [ "$PLATFORM" = auto ] || { echo "$PLATFORM"; return; }
    if [ -f "$(path /etc/nv_tegra_release)" ]; then echo jetson; return; fi
    if grep -qs "Raspberry Pi" "$(path /proc/device-tree/model)"; then echo pi; return; fi
    if grep -qs "raspberrypi" "$(path /etc/apt/sources.list.d/raspi.list)"; then echo pi; return; fi
    echo debian
}
PLATFORM="$(detect_platform)"
echo "provisioning a $ROLE on $PLATFORM into $ROOT$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"

# -- 1. system packages --------------------------------------------------------

packages() {
    local list=(python3 python3-venv python3-pip ca-certificates mosquitto-clients)
    [ "$PLATFORM" = pi ] && list+=(python3-picamera2)
    [ "$ROLE" = gateway ] && list+=(mosquitto)
    echo "${list[@]}"
}

step_packages() {
    if [ "$SKIP_PACKAGES" = 1 ]; then unchanged packages "skipped (--skip-packages)"; return; fi
    local missing=() pkg
    for pkg in $(packages); do
        if ! dpkg-query --admindir="$(path /var/lib/dpkg)" -W -f='${Status}' "$pkg" \
            2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} = 0 ]; then unchanged packages "$(packages)"; return; fi
    change packages "install ${missing[*]}" in_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# -- 2. the sitlab user --------------------------------------------------------

step_user() {
    if [ -n "$(uid_of sitlab)" ]; then unchanged user "sitlab exists"
    else
        change user "create system user sitlab" \
            useradd --root "$ROOT" --system --user-group --home-dir /var/lib/sitlab \
            --no-create-home --shell /usr/sbin/nologin sitlab
    fi
    local group
    for group in video render; do
        [ -n "$(gid_of "$group")" ] || continue
        if awk -F: -v g="$group" '$1 == g { print $4 }' "$(path /etc/group)" \
            | tr ',' '\n' | grep -qx sitlab; then
            unchanged user "sitlab in group $group"
        else
            change user "add sitlab to group $group" \
                usermod --root "$ROOT" --append --groups "$group" sitlab
        fi
    done
}

# -- 3. directories --------------------------------------------------------------

ensure_dir() {                            # ensure_dir PATH MODE UID GID
    local target; target="$(path "$1")"
    if [ -d "$target" ] && [ "$(stat -c '%a %u %g' "$target" 2>/dev/null)" = "$2 $3 $4" ]; then
        unchanged dirs "$1"
        return
    fi
    change dirs "create $1 ($2 $3:$4)" install -d -m "$2" -o "$3" -g "$4" "$target"
}

owner_ids() {                             # print numeric uid:gid, or names in a dry run
    local uid gid; uid="$(uid_of "$1")"; gid="$(gid_of "$2")"
    echo "${uid:-$1}:${gid:-$2}"
}

step_dirs() {
    local ids uid gid
    ids="$(owner_ids sitlab sitlab)"; uid="${ids%%:*}"; gid="${ids##*:}"
    ensure_dir /opt/sitlab 755 0 0
    ensure_dir /opt/sitlab/models 755 0 0
    ensure_dir /etc/sitlab 750 0 "$gid"
    ensure_dir /var/lib/sitlab 750 "$uid" "$gid"
}

# -- 4. virtual environment and the product ---------------------------------------

step_venv() {
    local venv=/opt/sitlab/venv flags=()
    # picamera2 comes from apt (libcamera bindings are not on PyPI), so the
    # Pi's venv must see the system site-packages.
    [ "$PLATFORM" = pi ] && flags+=(--system-site-packages)
    if [ -z "$WHEEL" ] && [ -z "$SRC" ]; then unchanged venv "no --wheel or --src given"; return; fi
    if [ -x "$(path $venv/bin/python)" ]; then unchanged venv "$venv"; return; fi
    change venv "create $venv${flags[*]:+ ${flags[*]}}" in_root python3 -m venv "${flags[@]}" "$venv"
}

product_stamp() {
    if [ -n "$WHEEL" ]; then sha256sum "$WHEEL" | cut -d' ' -f1; return; fi
    (cd "$SRC" && find . -path ./.git -prune -o \( -name '*.py' -o -name '*.json' \
        -o -name pyproject.toml \) -type f -print | LC_ALL=C sort | xargs sha256sum \
        | sha256sum | cut -d' ' -f1)
}

install_product() {
    local dist; dist="$(path /opt/sitlab/dist)"
    rm -rf "$dist" && mkdir -p "$dist"
    if [ -n "$WHEEL" ]; then
        cp "$WHEEL" "$dist/"
        in_root /opt/sitlab/venv/bin/pip install --upgrade "/opt/sitlab/dist/$(basename "$WHEEL")"
    else
        (cd "$SRC" && tar --exclude=.git --exclude='*.onnx' -cf - .) | tar -xf - -C "$dist"
        in_root /opt/sitlab/venv/bin/pip install --upgrade /opt/sitlab/dist
    fi
    echo "$1" > "$(path /opt/sitlab/.product-stamp)"
}

step_product() {
    if [ -z "$WHEEL" ] && [ -z "$SRC" ]; then unchanged product "no --wheel or --src given"; return; fi
    local stamp; stamp="$(product_stamp)"
    if [ "$(cat "$(path /opt/sitlab/.product-stamp)" 2>/dev/null)" = "$stamp" ]; then
        unchanged product "sitlab-edge ${stamp:0:12}"
        return
    fi
    change product "pip install ${WHEEL:-$SRC} (${stamp:0:12})" install_product "$stamp"
}

# -- 5. the model ------------------------------------------------------------------

step_model() {
    if [ -n "$MODEL_FILE" ]; then
        local target; target="$(path /opt/sitlab/models)/$(basename "$MODEL_FILE")"
        if same_file "$MODEL_FILE" "$target"; then unchanged model "$(basename "$MODEL_FILE")"; return; fi
        change model "copy $(basename "$MODEL_FILE") to /opt/sitlab/models" \
            install -m 0644 -o root -g root "$MODEL_FILE" "$target"
        return
    fi
    [ -n "$MODEL_NAME" ] || { unchanged model "no --model or --model-file given"; return; }
    local stamp; stamp="$(path "/opt/sitlab/models/.pulled-$MODEL_NAME")"
    if [ -f "$stamp" ]; then unchanged model "$MODEL_NAME"; return; fi
    local args=(pull "$MODEL_NAME" --dest /opt/sitlab/models)
    [ -z "$MODEL_FROM" ] || args+=(--from /opt/sitlab/dist-models)
    change model "sitlab-models ${args[*]}" pull_model "$stamp" "${args[@]}"
}

pull_model() {                            # pull_model STAMP-FILE ARGS...
    local stamp="$1"; shift
    if [ -n "$MODEL_FROM" ]; then
        # The chroot cannot see the host's folder; copy it in first.
        mkdir -p "$(path /opt/sitlab/dist-models)"
        cp -r "$MODEL_FROM"/. "$(path /opt/sitlab/dist-models)/"
    fi
    in_root /opt/sitlab/venv/bin/sitlab-models "$@"
    touch "$stamp"
}

# -- 6. credentials and configs ---------------------------------------------------------

copy_secret() {                            # copy_secret SOURCE TARGET MODE OWNER GROUP
    local source="$1" target="$2" mode="$3" owner="$4" group="$5"
    if same_file "$source" "$target" \
        && [ "$(stat -c '%a %u %g' "$target")" = "$mode $owner $group" ]; then
        unchanged credentials "${target#"${ROOT%/}"}"
        return
    fi
    change credentials "install ${target#"${ROOT%/}"} ($mode)" \
        install -m "$mode" -o "$owner" -g "$group" "$source" "$target"
}

step_credentials() {
    [ -n "$CREDENTIALS" ] || { unchanged credentials "no --credentials given"; return; }
    local ids uid gid file name mode owner
    ids="$(owner_ids sitlab sitlab)"; uid="${ids%%:*}"; gid="${ids##*:}"
    ensure_dir /etc/sitlab/credentials 750 0 "$gid"
    for file in "$CREDENTIALS"/*; do
        [ -f "$file" ] || continue
        name="$(basename "$file")"
        # Private keys and passwords: readable by the node's user only.
        case "$name" in *.key|password*|*.pass) mode=600; owner="$uid" ;;
            *) mode=640; owner=0 ;; esac
        copy_secret "$file" "$(path /etc/sitlab/credentials)/$name" "$mode" "$owner" "$gid"
    done
}

step_node_config() {
    [ "$ROLE" = node ] || return 0
    [ -n "$NODE_CONFIG" ] || { unchanged config "no --node-config given"; return; }
    local ids uid gid dir target
    ids="$(owner_ids sitlab sitlab)"; uid="${ids%%:*}"; gid="${ids##*:}"
    ensure_dir "/var/lib/sitlab/$NODE" 750 "$uid" "$gid"
    target="$(path "/var/lib/sitlab/$NODE/node.yaml")"
    if same_file "$NODE_CONFIG" "$target"; then unchanged config "/var/lib/sitlab/$NODE/node.yaml"; return; fi
    if [ -f "$target" ] && [ "$FORCE_CONFIG" = 0 ]; then
        # The gateway may have changed it remotely; overwriting would undo that.
        echo "[config] kept: /var/lib/sitlab/$NODE/node.yaml differs from $NODE_CONFIG (--force-config replaces it)"
        return
    fi
    change config "install /var/lib/sitlab/$NODE/node.yaml" \
        install -m 640 -o "$uid" -g "$gid" "$NODE_CONFIG" "$target"
}

step_gateway_config() {
    [ "$ROLE" = gateway ] || return 0
    [ -n "$GATEWAY_CONFIG" ] || { unchanged config "no --gateway-config given"; return; }
    local gid; gid="$(owner_ids root sitlab | cut -d: -f2)"
    copy_secret "$GATEWAY_CONFIG" "$(path /etc/sitlab/gateway.yaml)" 640 0 "$gid"
}

# -- 7. systemd units ------------------------------------------------------------------

enable_unit() {                            # enable_unit UNIT-FILE INSTANCE-NAME
    local wants; wants="$(path /etc/systemd/system/multi-user.target.wants)"
    mkdir -p "$wants"
    ln -sfn "/etc/systemd/system/$1" "$wants/$2"
}

step_units() {
    local unit instance
    if [ "$ROLE" = node ]; then unit=sitlab-edge@.service; instance="sitlab-edge@$NODE.service"
    else unit=sitlab-gateway.service; instance=sitlab-gateway.service; fi
    local target; target="$(path /etc/systemd/system/$unit)"
    if same_file "$HERE/systemd/$unit" "$target"; then unchanged units "$unit"
    else
        change units "install /etc/systemd/system/$unit" \
            install -D -m 0644 "$HERE/systemd/$unit" "$target"
    fi
    if [ -L "$(path /etc/systemd/system/multi-user.target.wants/$instance)" ]; then
        unchanged units "$instance enabled"
    else
        change units "enable $instance" enable_unit "$unit" "$instance"
    fi
}

step_start() {
    if [ "$ROOT" != / ]; then unchanged start "not started: --root given, boot the tree to start it"; return; fi
    if [ "$CHANGES" = 0 ]; then unchanged start "nothing changed, no restart"; return; fi
    local instance=sitlab-gateway.service
    [ "$ROLE" = node ] && instance="sitlab-edge@$NODE.service"
    change start "reload systemd and restart $instance" \
        bash -c "systemctl daemon-reload && systemctl restart '$instance'"
}

step_packages
step_user
step_dirs
step_venv
step_product
step_model
step_credentials
step_node_config
step_gateway_config
step_units
step_start
if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: $CHANGES changes would be made"
else
    echo "done: $CHANGES changes made"
fi
