# Sourced by scripts/*: install Debian packages as root (or with sudo), updating lists once,
# waiting up to 5 minutes for another apt/dpkg run to release its locks.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_get() { as_root apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_install() {
  local try
  for try in 1 2 3 4 5 6; do
    if { [ -n "${LIMEN_APT_UPDATED:-}" ] || apt_get update -qq; } \
       && DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "$@" >/dev/null
    then export LIMEN_APT_UPDATED=1; return 0; fi
    echo "apt-get failed (attempt $try); retrying in 10 s" >&2; sleep 10
  done
  return 1
}
