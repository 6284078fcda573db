// Package labtest brings up a lab (package lab) for a test: it skips the
// test where a lab cannot run (or fails it under BERTH_E2E=required), takes
// turns with the tests of other packages (there is one lab per host),
// removes a lab that a killed test run left behind, and takes the lab down
// when the test ends, however it ends.
package labtest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/lab"
)

// DirPrefix starts the name of every test lab's directory (in
// os.TempDir()), which marks a lab as a test's: one whose test process is
// gone may be removed by any other test.
const DirPrefix = "berth-labtest-"

// Timeout bounds the wait for other packages' labs plus Up.
var Timeout = 10 * time.Minute

// Require skips t (or fails it under BERTH_E2E=required) unless this host
// can run a lab: root, and the Debian programs it starts; with images, also
// what building the echo images needs.
func Require(t testing.TB, withImages bool) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Require(t, "sshd", "containerd", "containerd-shim-runc-v2", "runc", "docker-registry")
	if withImages {
		testenv.Require(t, "go", filepath.Base(images.BusyboxPath))
	}
}

// Start brings up a lab of opts.Nodes machines for t in a new directory
// (opts.Dir and opts.Wait are set here; a nil opts.Logger logs to t) and
// takes it down when t ends.
func Start(t testing.TB, opts lab.Options) *lab.Lab {
	t.Helper()
	Require(t, !opts.SkipImages)
	dir, err := os.MkdirTemp("", DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.Wait = dir, true
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	t.Cleanup(func() {
		if _, err := lab.Down(context.Background(), dir); err != nil {
			t.Errorf("labtest: %v", err)
		}
		os.RemoveAll(dir) // left only if Up failed before making anything
	})
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	RemoveAbandoned(t)
	began := time.Now()
	l, err := lab.Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("labtest: lab of %d machines up in %v (%s)", opts.Nodes, time.Since(began).Round(time.Millisecond), dir)
	return l
}

// RemoveAbandoned takes down the lab that is up on this host if a test
// made it and that test's process has ended.
func RemoveAbandoned(t testing.TB) {
	t.Helper()
	dir, up, err := lab.HostLab()
	if err != nil || !up || filepath.Dir(dir) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(dir), DirPrefix) {
		return
	}
	ctx := context.Background()
	if r, err := lab.Status(ctx, dir); err == nil && r.OwnerAlive {
		return // another test's, still running
	}
	t.Logf("labtest: removing the lab a killed test left in %s", dir)
	if _, err := lab.Down(ctx, dir); err != nil {
		t.Logf("labtest: %v", err)
	}
}

// Logger is a logger that writes to t.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
