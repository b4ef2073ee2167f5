# Sourced by scripts/*: install Debian packages as root (or with sudo), updating lists once.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  if [ -z "${LIMEN_APT_UPDATED:-}" ]; then as_root apt-get update -qq; export LIMEN_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
