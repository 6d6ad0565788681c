#!/usr/bin/env bash
# Builds a real kube-apiserver (k8s.io/kubernetes v$K8S_VERSION) and etcd from the
# Go module proxy into a cache outside the work tree, so that every clone on this
# machine (and CI) reuses them. Prints the cache directory on stdout.
#
# k8s.io/kubernetes is not meant to be required as a module: its go.mod points the
# k8s.io/* staging modules at ./staging. We mirror every such line with a replace
# to the published v0.x tag of the same release.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.8}
CACHE=${KO_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-outpost-lab}
BIN="$CACHE/bin-k8s$K8S_VERSION-etcd$ETCD_VERSION"
mkdir -p "$BIN"
log() { echo ">> $*" >&2; }
# Two builds at once (two checkouts' make runs) would share the work
# directories and the .tmp files: the second waits, then finds the first's.
exec 9>"$CACHE/.build.lock"
flock 9

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-proxy" ]; then
  log "building kube-apiserver and kube-proxy v$K8S_VERSION (first time: several minutes)"
  work="$CACHE/src-k8s$K8S_VERSION"
  mkdir -p "$work"
  cd "$work"
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes v$K8S_VERSION"; exit 1; }
  staging_version="0.${K8S_VERSION#1.}"
  {
    echo "module kube-outpost-lab/k8s"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    grep -E '^\s*k8s.io/[^ ]+ => \./staging/' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " v" v}'
  } > go.mod
  n=$(grep -c '^replace' go.mod)
  [ "$n" -gt 20 ] || { log "expected the staging replaces in k8s.io/kubernetes' go.mod, found $n"; exit 1; }
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
  GOFLAGS=-mod=mod go mod tidy
  CGO_ENABLED=0 go build -tags tools -trimpath -ldflags=-s -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  CGO_ENABLED=0 go build -tags tools -trimpath -ldflags=-s -o "$BIN/kube-proxy.tmp" k8s.io/kubernetes/cmd/kube-proxy
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
  mv "$BIN/kube-proxy.tmp" "$BIN/kube-proxy"
fi

if [ ! -x "$BIN/etcd" ]; then
  log "building etcd v$ETCD_VERSION"
  work="$CACHE/src-etcd$ETCD_VERSION"
  mkdir -p "$work"
  cd "$work"
  cat > go.mod <<GOMOD
module kube-outpost-lab/etcd

go 1.25
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
  GOFLAGS=-mod=mod go mod tidy
  CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi
echo "$BIN"
