package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// DriverCommand is the hidden subcommand of the berth binary that runs the
// log driver. containerd's shim runs a binary:// log URI's binary with the
// URI's query as arguments, key then value; DriverArgs makes that query a
// single key, DriverCommand, whose value is the JSON DriverConfig, so the
// shim runs
//
//	berth __log-driver '{"path":"/var/log/berth/pods/.../0.log",...}'
//
// and the binary must hand the arguments after DriverCommand to RunDriver.
const DriverCommand = "__log-driver"

// DrainTimeout bounds how long the driver keeps copying after it is asked
// to stop (the shim sends SIGTERM when the task is deleted, and SIGKILL 12 s
// later).
const DrainTimeout = 10 * time.Second

// DriverConfig is what the driver needs to know of one container's log.
type DriverConfig struct {
	Path     string `json:"path"`
	MaxSize  int64  `json:"maxSize,omitempty"`
	MaxFiles int    `json:"maxFiles,omitempty"`
}

// Validate checks the configuration.
func (c DriverConfig) Validate() error {
	if c.Path == "" || c.Path[0] != '/' {
		return fmt.Errorf("log driver: path %q is not absolute", c.Path)
	}
	if c.MaxSize < 0 || c.MaxFiles < 0 {
		return fmt.Errorf("log driver: negative size cap")
	}
	return nil
}

// DriverArgs returns the query of the binary:// log URI that runs the
// driver with cfg (for cio.BinaryIO).
func DriverArgs(cfg DriverConfig) (map[string]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return map[string]string{DriverCommand: string(b)}, nil
}

// The descriptors containerd's shim hands a logging binary (see
// containerd's core/runtime/v2/logging): the container's stdout and stderr,
// and a pipe to write one byte to, then close, once ready.
const (
	fdStdout = 3
	fdStderr = 4
	fdReady  = 5
)

// RunDriver is the log driver: args are the arguments after DriverCommand.
// It opens the log file, tells the shim it is ready, and copies the
// container's stdout and stderr into the file until both end (the container
// and every process holding them exited). When ctx is cancelled (the
// binary's SIGTERM), it keeps copying for up to DrainTimeout, so that the
// last output is not lost, then stops.
func RunDriver(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("log driver: want one argument (the configuration), got %d", len(args))
	}
	var cfg DriverConfig
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		return fmt.Errorf("log driver: configuration: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var files [3]*os.File
	for i, fd := range []int{fdStdout, fdStderr, fdReady} {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			return fmt.Errorf("log driver: descriptor %d is not a pipe (the driver runs under containerd's shim)", fd)
		}
		// Non-blocking descriptors go through Go's poller, so that Close
		// interrupts a read when draining times out.
		if fd != fdReady {
			if err := syscall.SetNonblock(fd, true); err != nil {
				return fmt.Errorf("log driver: descriptor %d: %w", fd, err)
			}
		}
		files[i] = os.NewFile(uintptr(fd), [...]string{"stdout", "stderr", "ready"}[i])
	}
	stdout, stderr, ready := files[0], files[1], files[2]
	defer stdout.Close()
	defer stderr.Close()

	lf, err := OpenFile(cfg.Path, cfg.MaxSize, cfg.MaxFiles)
	if err != nil {
		ready.Close()
		return fmt.Errorf("log driver: %w", err)
	}
	defer lf.Close()
	_, err = ready.Write([]byte{0})
	if cerr := ready.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("log driver: signal ready: %w", err)
	}

	errc := make(chan error, 2)
	go func() { errc <- lf.Copy(stdout, Stdout) }()
	go func() { errc <- lf.Copy(stderr, Stderr) }()
	var errs []error
	pending := 2
	// wait collects the copies' results until both are done (true) or stop
	// is closed (false).
	wait := func(stop <-chan struct{}) bool {
		for pending > 0 {
			select {
			case err := <-errc:
				pending--
				errs = append(errs, err)
			case <-stop:
				return false
			}
		}
		return true
	}
	if !wait(ctx.Done()) {
		drain, cancel := context.WithTimeout(context.Background(), DrainTimeout)
		defer cancel()
		if !wait(drain.Done()) {
			stdout.Close()
			stderr.Close()
			wait(nil)
			errs = append(errs, fmt.Errorf("output still open %v after stop", DrainTimeout))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("log driver: %w", err)
	}
	return nil
}

// RunIfDriver runs the log driver and exits when the process was started
// as one (its first argument is DriverCommand), and returns otherwise. It
// is for test binaries that stand in for the berth binary as the
// containers' log driver: they call it first thing in TestMain.
func RunIfDriver() {
	if len(os.Args) < 2 || os.Args[1] != DriverCommand {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	err := RunDriver(ctx, os.Args[2:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
