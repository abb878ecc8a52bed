// Command stargz-grpc serves the stargz snapshotter (github.com/containerd/stargz-snapshotter, as
// Debian packages its Go source in golang-github-containerd-stargz-snapshotter-dev) to containerd
// as a proxy snapshotter plugin over gRPC on a unix socket. It is the baseline of the cold-start
// benchmark (bench/coldstart.ts), which builds it offline with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o DIR/stargz-grpc bench/stargz-grpc/main.go
//
// Debian ships ctr-remote but not upstream's containerd-stargz-grpc; this is the small part of that
// program the benchmark needs: the snapshotter with its default filesystem configuration, and
// registries that are reached over plain HTTP named with -plain-http (the benchmark's registry).
// It wires the packages itself rather than through stargz's service/ package, whose resolver
// imports k8s.io/cri-api, which Debian does not package; no credentials are configured.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	snbase "github.com/containerd/stargz-snapshotter/snapshot"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "", "unix socket to serve the snapshotter on")
	root := flag.String("root", "", "state directory of the snapshotter")
	plain := flag.String("plain-http", "", "comma-separated registry hosts reached over plain HTTP")
	flag.Parse()
	if *address == "" || *root == "" {
		fmt.Fprintln(os.Stderr, "stargz-grpc: -address and -root are required")
		os.Exit(2)
	}
	plainHosts := map[string]bool{}
	for _, h := range strings.Split(*plain, ",") {
		plainHosts[h] = h != ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), fsconfig.Config{},
		stargzfs.WithGetSources(source.FromDefaultLabels(registryHosts(plainHosts))),
		stargzfs.WithOverlayOpaqueType(layer.OverlayOpaqueTrusted))
	if err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: filesystem: %v\n", err)
		os.Exit(1)
	}
	sn, err := snbase.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snbase.AsynchronousRemove)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: snapshotter: %v\n", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: %v\n", err)
		os.Exit(1)
	}
	_ = os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: listen %s: %v\n", *address, err)
		os.Exit(1)
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		rpc.Stop()
	}()
	err = rpc.Serve(l)
	// Close unmounts every layer the filesystem mounted.
	if cerr := sn.Close(); cerr != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: close: %v\n", cerr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: serve: %v\n", err)
		os.Exit(1)
	}
}

// registryHosts answers with the image's own registry: over plain HTTP when it is named in plain,
// HTTPS otherwise; pull and resolve only, with a 30 s timeout per request.
func registryHosts(plain map[string]bool) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		host := ref.Hostname()
		// The filesystem wraps Client.Transport for its range requests: it must be set.
		client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 30 * time.Second}
		scheme := "https"
		if plain[host] {
			scheme = "http"
		}
		return []docker.RegistryHost{{
			Client:       client,
			Host:         host,
			Scheme:       scheme,
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
			Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client)),
		}}, nil
	}
}
