// containerd's own snapshotter test suite (snapshots/testsuite of containerd 1.6, from Debian's
// golang-github-containerd-containerd-dev) run against containerd-nydus-grpc over its unix socket,
// dialled exactly as containerd dials a proxy plugin (grpc.Dial("unix://PATH") with containerd's
// context dialer). Each of the suite's tests gets its own snapshotter process on a fresh root.
//
// Built offline in GOPATH mode by test/containerd-testsuite.test.ts:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode NYDUS_SNAPSHOTTER_BIN=$PWD/bin/containerd-nydus-grpc \
//	  go test -count=1 -v ./test/containerd-testsuite
package nydustestsuite

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// startSnapshotter runs our snapshotter with `root` as its state directory (no lazy loading:
// daemon_mode "none", so no nydusd is involved) and connects to it as containerd would.
func startSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin := os.Getenv("NYDUS_SNAPSHOTTER_BIN")
	if bin == "" {
		return nil, nil, fmt.Errorf("NYDUS_SNAPSHOTTER_BIN is not set")
	}
	// The socket lives beside root, not in it: the suite compares root's contents.
	sockDir, err := os.MkdirTemp("", "sn-")
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(sockDir, "sn.sock")
	cfg := filepath.Join(sockDir, "config.toml")
	conf := fmt.Sprintf("version = 1\nroot = %q\naddress = %q\ndaemon_mode = \"none\"\n[log]\nlevel = \"warn\"\nlog_to_stdout = true\n", root, sock)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	log, err := os.Create(filepath.Join(sockDir, "snapshotter.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() error {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
		return os.RemoveAll(sockDir)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			stop()
			return nil, nil, fmt.Errorf("snapshotter did not create %s: %s", sock, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Blocking dial with containerd's backoff: the socket file can appear a moment before the
	// server accepts on it, and containerd retries the same way.
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(dctx, dialer.DialAddress(sock), grpc.WithInsecure(), grpc.WithContextDialer(dialer.ContextDialer), grpc.WithBlock())
	if err != nil {
		stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "nydus")
	return sn, func() error {
		conn.Close()
		return stop()
	}, nil
}

func TestNydusSnapshotter(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: overlay mounts")
	}
	testsuite.SnapshotterSuite(t, "nydus", startSnapshotter)
}
