#!/usr/bin/env bash
# Installs the Debian packages berth's tests and lab need, when running as
# root and they are missing. As another user it only says what is missing:
# the layers that need them then skip (or fail under BERTH_E2E=required).
set -euo pipefail

packages=(git containerd runc docker-registry busybox-static openssh-server iproute2 containernetworking-plugins nftables)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages: ${missing[*]} (run make test as root to install them)" >&2
	exit 0
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
