#!/usr/bin/env bash
# Installs what the pipeline needs from Debian (Vulkan loader, Redis and Postgres for the integration tier,
# docker-compose to validate the compose file, Chromium + chromedriver to open the run report in a test)
# and sets up a software Vulkan driver that SAPIEN accepts.
#
# Why a private Mesa: SAPIEN (ManiSkill's renderer) rejects bookworm's lavapipe (Mesa 22.3 lacks
# descriptorBindingPartiallyBound); Mesa >= 24.3 from bookworm-backports works. We unpack the
# backports driver into .cache/mesa instead of changing the system's apt sources, and point
# VK_ICD_FILENAMES at it (see tools/env.sh). Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MESA_DIR="$ROOT/.cache/mesa"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_pkgs=()
for p in libvulkan1 mesa-vulkan-drivers redis-server postgresql docker-compose chromium chromium-driver; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The apt postinst may start services system-wide; our tests start their own on loopback.
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

if [ ! -f "$MESA_DIR/lvp_icd.json" ]; then
  echo "[setup] fetching Mesa lavapipe from bookworm-backports into $MESA_DIR"
  APT_DIR="$ROOT/.cache/apt-backports"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$MESA_DIR"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "deb $mirror bookworm-backports main" > "$APT_DIR/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=-"
            -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache::Archives=$APT_DIR/archives"
            -o "APT::Get::List-Cleanup=0")
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$APT_DIR" && apt-get "${APT_OPTS[@]}" download -qq \
      mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports)
  for deb in "$APT_DIR"/*.deb; do dpkg -x "$deb" "$MESA_DIR"; done
  lib="$MESA_DIR/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
  [ -f "$lib" ] || { echo "[setup] lavapipe library missing after unpack: $lib" >&2; exit 1; }
  cat > "$MESA_DIR/lvp_icd.json.tmp" <<JSON
{"file_format_version": "1.0.0",
 "ICD": {"library_path": "$lib", "api_version": "1.3.0"}}
JSON
  mv "$MESA_DIR/lvp_icd.json.tmp" "$MESA_DIR/lvp_icd.json"
fi
echo "[setup] system packages and software Vulkan ready"
