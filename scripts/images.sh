#!/usr/bin/env bash
# Builds ModelFleet's container images with buildah from the release binaries and writes
# each as a docker-archive a cluster can load (`ctr images import`, `docker load`,
# `kind load image-archive`) or a registry can take (`buildah push`, `skopeo copy`).
#
#   engine      ghcr.io/modelfleet/engine:<version>    modelfleet-engine (serve, fetch)
#   operator    ghcr.io/modelfleet/operator:<version>  modelfleet-operator
#   pause       localhost/modelfleet/pause:<version>   the test node's pod sandbox
#   test-server localhost/modelfleet/test-server:<version> a pod for the harness's tests
#
# <version> is the workspace's version, which is also the chart's appVersion (the tag the
# chart and the operator default to); a mismatch stops the build.
#
# Every image is FROM scratch (images/<name>/Containerfile): the binary, the shared libraries
# `ldd` names for it, a CA bundle, /etc/passwd and /etc/group with the unprivileged user
# 65532; no shell, no package manager. buildah runs as root with its storage in a throwaway
# directory, which is removed afterwards.
#
# Usage: scripts/images.sh [all|product|engine|operator|pause|test-server ...]
#   IMAGES_DIR      where the archives go (default: $CARGO_TARGET_DIR/images, i.e. target/images)
#   IMAGE_REGISTRY  registry and namespace of the product images (default: ghcr.io/modelfleet)
#   IMAGES_NO_BUILD=1  use the release binaries as they are (do not run cargo build first)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${IMAGES_DIR:-$target/images}"
registry="${IMAGE_REGISTRY:-ghcr.io/modelfleet}"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

command -v buildah >/dev/null || die "no buildah on PATH: run 'make tools' (it installs Debian's buildah)"

version="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
[[ -n "$version" ]] || die "no version in [workspace.package] of Cargo.toml"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/modelfleet/Chart.yaml")"
[[ "$app_version" == "$version" ]] \
    || die "the chart's appVersion ($app_version) is not the workspace version ($version): the chart would default to a tag nobody builds"
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
# The commit's time, so rebuilding one commit gives the same created date.
epoch="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

tag_of() {
    case "$1" in
        engine | operator) echo "$registry/$1:$version" ;;
        pause | test-server) echo "localhost/modelfleet/$1:$version" ;;
        *) die "unknown image '$1' (engine, operator, pause, test-server)" ;;
    esac
}

# package and binary of the images made from a workspace binary
package_of() {
    case "$1" in
        engine) echo "modelfleet-engine modelfleet-engine" ;;
        operator) echo "modelfleet-operator modelfleet-operator" ;;
        test-server) echo "modelfleet-e2e modelfleet-test-server" ;;
    esac
}

# Copies every shared object `ldd` resolves for $1 (and the extra sonames after it, found next
# to libc) into the rootfs $2 at the path the dynamic loader looks for it.
copy_libraries() {
    local binary="$1" rootfs="$2"; shift 2
    local libs
    # "libc.so.6 => /lib/.../libc.so.6 (0x…)" and the loader, "/lib64/ld-linux-x86-64.so.2 (0x…)"
    libs="$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')" \
        || die "ldd $binary failed"
    local libc_dir
    libc_dir="$(dirname "$(ldd "$binary" | awk '/libc\.so/ { print $3 }')")"
    local extra
    for extra in "$@"; do
        [[ -e "$libc_dir/$extra" ]] || die "$extra not found in $libc_dir"
        libs+=$'\n'"$libc_dir/$extra"
    done
    local lib
    while read -r lib; do
        [[ -n "$lib" ]] || continue
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
        log "  $(basename "$binary"): $lib"
    done <<< "$libs"
}

stage_rootfs() {
    local rootfs="$1"
    install -d -m 0755 "$rootfs/etc/ssl/certs"
    install -d -m 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
    install -d -m 0700 "$rootfs/home/nonroot"
    local bundle=/etc/ssl/certs/ca-certificates.crt
    [[ -s $bundle ]] || die "no CA bundle at $bundle (Debian package ca-certificates)"
    install -m 0644 "$bundle" "$rootfs$bundle"
}

build_one() {
    local name="$1" tag context archive
    tag="$(tag_of "$name")"
    context="$out/$name.context"
    archive="$out/$name.tar"
    rm -rf "$context"
    mkdir -p "$context"
    cp "$repo/images/$name/Containerfile" "$context/Containerfile"
    if [[ "$name" == pause ]]; then
        command -v gcc >/dev/null || die "pause: no gcc to build it with"
        gcc -static -Os -s -o "$context/pause" "$repo/images/pause/pause.c" || die "pause: gcc -static failed (Debian package libc6-dev)"
    else
        local package binary
        read -r package binary <<< "$(package_of "$name")"
        local built="$target/release/$binary"
        [[ -x "$built" ]] || die "$built is missing: build it with 'cargo build --release -p $package'"
        # Debug line tables stay in the workspace's binary; the image carries the symbols
        # (readable backtraces) without them.
        strip --strip-debug -o "$context/$binary" "$built"
        local extra=()
        # The CUDA backend dlopens libcuda (which the NVIDIA container runtime mounts into the
        # container), and libcuda links these.
        [[ "$name" == engine ]] && extra=(libdl.so.2 libpthread.so.0 librt.so.1)
        stage_rootfs "$context/rootfs"
        copy_libraries "$built" "$context/rootfs" "${extra[@]}"
    fi
    local storage="$out/.buildah"
    local buildah=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
    log "$name: building $tag"
    "${buildah[@]}" bud --quiet --layers=false --timestamp "$epoch" \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
        -f "$context/Containerfile" -t "$tag" "$context" > /dev/null \
        || die "$name: buildah bud failed"
    "${buildah[@]}" push --quiet "$tag" "docker-archive:$archive.tmp:$tag" \
        || die "$name: writing the docker-archive failed"
    mv "$archive.tmp" "$archive"
    "${buildah[@]}" rmi --all --force > /dev/null 2>&1 || true
    rm -rf "$context"
    log "$name: $tag -> $archive ($(du -h "$archive" | cut -f1))"
}

names=()
for arg in "${@:-all}"; do
    case "$arg" in
        all) names+=(engine operator pause test-server) ;;
        product) names+=(engine operator) ;;
        *) tag_of "$arg" >/dev/null; names+=("$arg") ;;
    esac
done

if [[ "${IMAGES_NO_BUILD:-0}" != 1 ]]; then
    cargo_args=()
    for name in "${names[@]}"; do
        [[ "$name" == pause ]] && continue
        read -r package binary <<< "$(package_of "$name")"
        cargo_args+=(-p "$package" --bin "$binary")
    done
    if [[ ${#cargo_args[@]} -gt 0 ]]; then
        log "building the release binaries: ${cargo_args[*]}"
        (cd "$repo" && cargo build --release --locked "${cargo_args[@]}") || die "cargo build failed"
    fi
fi

mkdir -p "$out"
started=$(date +%s)
for name in "${names[@]}"; do
    build_one "$name"
done
rm -rf "$out/.buildah"
log "built ${names[*]} in $(( $(date +%s) - started ))s; archives in $out"
