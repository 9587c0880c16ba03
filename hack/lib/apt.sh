# shellcheck shell=bash
# Shared by hack/redis.sh and hack/tools.sh: install a Debian package that ships a service
# without letting it start that service (we only want the binaries), then keep it disabled.

_apt_get_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# apt_install_no_start SERVICE SPEC [FALLBACK_SPEC]
#   Installs SPEC (e.g. redis-server, or prometheus=2.42.0+ds-5+deb12u1), refreshing the
#   package lists only if the first try fails; then FALLBACK_SPEC if given and SPEC is gone
#   from the mirror. A temporary policy-rc.d denies service starts during the install (only
#   if the machine has none); SERVICE is stopped and disabled afterwards.
apt_install_no_start() {
  local service="$1" spec="$2" fallback="${3:-}"
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# temporary, from hack/lib/apt.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  if ! _apt_get_install "$spec"; then
    apt-get update -qq || true
    if ! _apt_get_install "$spec"; then
      if [[ -n "$fallback" ]]; then
        echo "WARNING: $spec is not available, installing $fallback" >&2
        _apt_get_install "$fallback" || rc=$?
      else
        rc=1
      fi
    fi
  fi
  if [[ $own_policy -eq 1 ]]; then rm -f "$policy"; fi
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$service.service" >/dev/null 2>&1 || true
    systemctl disable "$service.service" >/dev/null 2>&1 || true
  fi
  if [[ -x "/etc/init.d/$service" ]] && command -v update-rc.d >/dev/null 2>&1; then
    "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    update-rc.d "$service" disable >/dev/null 2>&1 || true
  fi
  return "$rc"
}
