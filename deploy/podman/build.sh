#!/usr/bin/env bash
# Build the varfx CPU image (deploy/docker/Dockerfile.cpu) with Debian's podman, without any
# container registry: the Dockerfile's base (python:3.11-slim-bookworm) is made here with
# debootstrap (Debian bookworm's python3 3.11 + python3-venv, from the Debian mirror apt uses)
# and imported under the name the Dockerfile's FROM uses. tests/deploy/test_image_podman.py runs
# this script; docs/deploy.md ("Build and run with podman") describes the route.
#
# Usage: deploy/podman/build.sh [TAG]        (run as root, from anywhere; default TAG varfx:cpu)
# Environment:
#   VARFX_PODMAN_CACHE   where the base tarball and the generated configs are kept
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/varfx/podman); a cached tarball
#                        is imported instead of running debootstrap again (~3 min)
#   VARFX_DEBIAN_MIRROR  the Debian mirror for debootstrap (default: the one apt's sources name)
#   CONTAINERS_CONF      used as it is when set; otherwise, where this machine needs it (no
#                        CAP_SYS_RESOURCE, or cgroups crun cannot drive), the script writes one
#                        to $VARFX_PODMAN_CACHE/containers.conf: `podman run` the image with
#                        the same CONTAINERS_CONF (the script's last line prints it)
#   PYTHON               a host Python whose `-m pip config list` gives the pip settings that
#                        the build's pip uses too (default python3)
# Exit status: 0 built; 2 usage or an unsupported base; 3 podman cannot run containers here;
# anything else: a failed step (its output says which).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dockerfile=$repo/deploy/docker/Dockerfile.cpu
tag=${1:-varfx:cpu}
cache=${VARFX_PODMAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/varfx/podman}
python=${PYTHON:-python3}
if [ "$#" -gt 1 ]; then
  echo "usage: $0 [TAG]" >&2
  exit 2
fi
log() { echo "build.sh: $*" >&2; }
die() {
  local code=$1
  shift
  log "$*"
  exit "$code"
}
command -v podman >/dev/null || die 3 "podman is not installed (Debian: apt-get install podman)"
[ "$(id -u)" = 0 ] || die 3 "run as root: rootful podman, and debootstrap needs root"
mkdir -p "$cache"

# ---- the base image: the name the Dockerfile's FROM uses, made with debootstrap ----
base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$dockerfile")
if [[ ! $base =~ ^python:(3\.[0-9]+)-slim-([a-z]+)$ ]]; then
  die 2 "$dockerfile: base '$base' is not python:3.N-slim-<debian suite>"
fi
py_version=${BASH_REMATCH[1]}
suite=${BASH_REMATCH[2]}
base_ref=docker.io/library/$base
tarball=$cache/base-$suite-python3-venv.tar

debian_mirror() {
  # The first Debian archive apt's sources name (deb822 .sources or one-line sources.list).
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    tr ' ' '\n' | grep -v -e security -e '^$' | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list \
      /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

make_base_tarball() {
  command -v debootstrap >/dev/null ||
    die 3 "debootstrap is not installed (Debian: apt-get install debootstrap)"
  local mirror root
  mirror=${VARFX_DEBIAN_MIRROR:-$(debian_mirror)}
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  log "debootstrap $suite (python3, python3-venv) from $mirror"
  if ! debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" \
    "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    rm -rf "$root"
    die 1 "debootstrap failed (log: $cache/debootstrap.log)"
  fi
  local got
  got=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$got" != "$py_version" ]; then
    rm -rf "$root"
    die 2 "Debian $suite's python3 is $got, but the Dockerfile's base is $base"
  fi
  # What a slim base does not carry: downloaded packages, package lists, documentation.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
}

if podman image exists "$base_ref"; then
  log "base $base_ref is present"
else
  [ -s "$tarball" ] || make_base_tarball
  log "podman import $tarball as $base_ref"
  podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$base_ref" >/dev/null
fi

# ---- containers.conf: what this machine needs for podman to start a container ----
has_cap_sys_resource() {
  local eff
  eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (((16#$eff >> 24) & 1)) # CAP_SYS_RESOURCE is capability 24
}
write_containers_conf() { # $1: runtime or ""
  local conf=$cache/containers.conf nofile nproc
  {
    echo "# Written by deploy/podman/build.sh for this machine."
    echo "[containers]"
    if ! has_cap_sys_resource; then
      # Without CAP_SYS_RESOURCE the runtime cannot raise rlimits to podman's defaults for
      # root (nofile 1048576); pin them to what podman itself runs with: the hard nofile limit,
      # and nproc at most 32768, where podman caps its own.
      nofile=$(ulimit -Hn)
      nproc=$(ulimit -Hu)
      [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
      echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    fi
    if [ -n "$1" ]; then
      echo "[engine]"
      echo "runtime = \"$1\""
    fi
  } >"$conf"
  export CONTAINERS_CONF=$conf
}
probe() { podman run --rm --network none "$base_ref" true 2>&1; }
if [ -z "${CONTAINERS_CONF:-}" ]; then
  write_containers_conf ""
  if ! out=$(probe); then
    # crun refuses cgroup v1 with controllers on the v2 hierarchy ("hybrid"); runc does not.
    if [[ $out == *hybrid* ]] && command -v runc >/dev/null; then
      write_containers_conf runc
      out=$(probe) || die 3 "podman cannot run a container here: $out"
    else
      die 3 "podman cannot run a container here: $out"
    fi
  fi
elif ! out=$(probe); then
  die 3 "podman cannot run a container here (CONTAINERS_CONF=$CONTAINERS_CONF): $out"
fi

# ---- pip in the RUN steps: this machine's pip settings, CA bundle and local indexes ----
# `pip config list` gives the settings from pip's config files and PIP_* variables; they go into
# one pip.conf mounted at /etc/pip.conf during the build, and every local path they name (CA
# bundle, constraints, file:// indexes with the directory above them, find-links directories) is
# mounted read-only at the same path. Nothing of this stays in the image.
pip_conf=$cache/pip.conf
mounts=()
ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
declare -A pip_settings=()
settings=$("$python" -m pip config list 2>/dev/null || true)
for scope in global install :env:; do # later scopes win, as in pip (PIP_* over files)
  while IFS= read -r line; do
    [[ $line =~ ^([a-z:]+)\.([a-z-]+)=\'(.*)\'$ ]] || continue
    [ "${BASH_REMATCH[1]}" = "$scope" ] && pip_settings[${BASH_REMATCH[2]}]=${BASH_REMATCH[3]}
  done <<<"$settings"
done
if [ -z "${pip_settings[cert]:-}" ] && [ -f "$ca" ]; then
  pip_settings[cert]=$ca
fi
{
  echo "[global]"
  for key in "${!pip_settings[@]}"; do
    value=${pip_settings[$key]}
    echo "$key = $value"
    for word in $value; do
      path=${word#file://}
      # A file:// index's pages link to files beside it (../../files/): mount its parent.
      [ "$path" != "$word" ] && path=$(dirname "${path%/}")
      if [[ $path == /* ]] && [ -e "$path" ]; then
        mounts+=(--volume "$path:$path:ro")
      fi
    done
  done
} >"$pip_conf"
mounts+=(--volume "$pip_conf:/etc/pip.conf:ro")

# ---- the image ----
old_id=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
log "podman build -f deploy/docker/Dockerfile.cpu -t $tag"
# --format docker keeps HEALTHCHECK (the OCI image format has no such field); --pull never:
# the base is the one imported above, nothing is fetched from a registry.
# The build stage first, with the mounts; then the whole file without them, so that the final
# stage's RUN leaves no mount points in the image (the build stage comes from the layer cache).
build=(podman build --format docker --pull=never -f "$dockerfile"
  --ignorefile "$dockerfile.dockerignore")
"${build[@]}" "${mounts[@]}" --target build "$repo" >&2
"${build[@]}" -t "$tag" "$repo" >&2
new_id=$(podman image inspect --format '{{.Id}}' "$tag")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  # The image this tag named before, now untagged: remove it unless something else uses it.
  podman rmi "$old_id" >/dev/null 2>&1 || true
fi
log "built $tag ($new_id)"
echo "CONTAINERS_CONF=${CONTAINERS_CONF}"
