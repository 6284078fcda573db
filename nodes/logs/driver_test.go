package logs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// TestMain lets the test binary act as the log driver, as the berth binary
// does, so that tests run it the way containerd's shim does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == DriverCommand {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := RunDriver(ctx, os.Args[2:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// shim starts the driver as containerd's shim does (see NewBinaryIO in
// containerd's pkg/process): the container's stdout and stderr pipes as fds
// 3 and 4, a ready pipe as fd 5, only CONTAINER_ID and CONTAINER_NAMESPACE
// in the environment, and waits for the ready byte.
type shim struct {
	cmd            *exec.Cmd
	stdout, stderr *os.File
	done           chan error
	output         strings.Builder
}

func startShim(t *testing.T, cfg DriverConfig) *shim {
	t.Helper()
	args, err := DriverArgs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	readyR, readyW, _ := os.Pipe()
	s := &shim{stdout: outW, stderr: errW, done: make(chan error, 1)}
	s.cmd = exec.Command(os.Args[0], DriverCommand, args[DriverCommand])
	s.cmd.Env = []string{"CONTAINER_ID=c1", "CONTAINER_NAMESPACE=berth"}
	s.cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	s.cmd.Stderr = &s.output
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outR.Close()
	errR.Close()
	readyW.Close()
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	b := make([]byte, 1)
	if n, err := readyR.Read(b); n != 1 {
		t.Fatalf("no ready byte from the driver: %v; its stderr: %s", err, s.output.String())
	}
	readyR.Close()
	return s
}

func (s *shim) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("driver: %v: %s", err, s.output.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("driver did not exit")
	}
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	var out strings.Builder
	if err := Read(context.Background(), path, api.LogOptions{}, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestDriverCopiesUntilTheContainerEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pod", "c", "0.log")
	s := startShim(t, DriverConfig{Path: path})
	fmt.Fprintln(s.stdout, "to stdout")
	time.Sleep(20 * time.Millisecond)
	fmt.Fprintln(s.stderr, "to stderr")
	time.Sleep(20 * time.Millisecond) // keep the two streams' order
	fmt.Fprint(s.stdout, "last, without newline")
	s.stdout.Close()
	s.stderr.Close()
	s.wait(t)
	if got, want := readAll(t, path), "to stdout\nto stderr\nlast, without newline\n"; got != want {
		t.Errorf("log: %q, want %q", got, want)
	}
	b, _ := os.ReadFile(path)
	for _, l := range strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n") {
		if _, err := ParseEntry([]byte(l)); err != nil {
			t.Errorf("line %q: %v", l, err)
		}
	}
}

func TestDriverDrainsAfterSIGTERM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	s := startShim(t, DriverConfig{Path: path, MaxSize: 1 << 10, MaxFiles: 3})
	fmt.Fprintln(s.stdout, "before")
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	// Still copying: a process that exits slowly is not cut off.
	for i := 0; i < 100; i++ {
		fmt.Fprintf(s.stdout, "after %d\n", i)
	}
	s.stdout.Close()
	s.stderr.Close()
	s.wait(t)
	got := readAll(t, path)
	if !strings.HasSuffix(got, "after 99\n") {
		t.Errorf("log after SIGTERM ends %q", got[max(0, len(got)-40):])
	}
	if files, _ := Files(path); len(files) != 3 {
		t.Errorf("log not rotated under its 1 KiB cap: %v", files)
	}
}

func TestDriverOutsideShim(t *testing.T) {
	// Without containerd's descriptors the driver refuses to start.
	cmd := exec.Command(os.Args[0], DriverCommand, `{"path":"/nonexistent/x.log"}`)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "descriptor 3") {
		t.Errorf("driver without descriptors: %v %s", err, out)
	}
	if _, err := DriverArgs(DriverConfig{Path: "relative.log"}); err == nil {
		t.Error("DriverArgs accepted a relative path")
	}
}
