package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"

	"berth.dev/berth/nodes/api"
)

// execCleanupTimeout bounds the cleanup of an exec process after its
// caller's context has ended.
const execCleanupTimeout = 10 * time.Second

// Exec runs a command in a running container, with the container's
// process settings (user, groups, environment, working directory,
// capabilities, no_new_privs, seccomp), and returns its exit code. The
// streams are the request's: with TTY a terminal (stdout carries both
// streams; Resize changes its size). req.Timeout (or ctx) ending kills the
// command and returns an error wrapping context.DeadlineExceeded (or the
// context's error).
func (r *Runtime) Exec(ctx context.Context, id string, req api.ExecRequest) (int, error) {
	if len(req.Command) == 0 {
		return -1, fmt.Errorf("%w: exec: no command", api.ErrInvalid)
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	ctx = r.ctx(ctx)

	var task client.Task
	var pspec *specs.Process
	err := r.retry(ctx, func(ctx context.Context) error {
		ctr, err := r.client.LoadContainer(ctx, id)
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("container %s: %w", id, api.ErrNotFound)
		}
		if err != nil {
			return err
		}
		spec, err := ctr.Spec(ctx)
		if err != nil {
			return err
		}
		task, err = ctr.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("%w: container %s is not running", api.ErrConflict, id)
		}
		if err != nil {
			return err
		}
		st, err := task.Status(ctx)
		if err != nil {
			return err
		}
		if st.Status != client.Running {
			return fmt.Errorf("%w: container %s is not running", api.ErrConflict, id)
		}
		p := *spec.Process
		pspec = &p
		return nil
	})
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	pspec.Args = req.Command
	pspec.Terminal = req.TTY
	pspec.ConsoleSize = nil

	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil || req.TTY {
		stderr = io.Discard
	}
	if stdout == stderr && stdout != io.Discard {
		// Two copies write into one writer at once: serialize them, and
		// hide a ReadFrom (bytes.Buffer's), which io.Copy would otherwise
		// call from both, each truncating what the other read.
		w := &lockedWriter{w: stdout}
		stdout, stderr = w, w
	}
	// Stdin reaching its end closes the process's stdin, so that commands
	// reading it finish; the process is only known once created.
	procReady := make(chan client.Process, 1)
	var stdin io.Reader
	if req.Stdin != nil {
		stdin = &stdinCloser{r: req.Stdin, onEOF: sync.OnceFunc(func() {
			if p, ok := <-procReady; ok {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), execCleanupTimeout)
				defer cancel()
				p.CloseIO(cctx, client.WithStdinCloser)
			}
		})}
	}
	ioOpts := []cio.Opt{cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(fifoDir(r.opts.StateDir))}
	if req.TTY {
		ioOpts = append(ioOpts, cio.WithTerminal)
	}

	// ctxErr reports an error after ctx ended as the end of ctx: the
	// timeout, rather than the RPC it cut short.
	ctxErr := func(err error) error {
		if cerr := ctx.Err(); cerr != nil {
			if errors.Is(cerr, context.DeadlineExceeded) && req.Timeout > 0 {
				return fmt.Errorf("exec in %s: timed out after %v: %w", id, req.Timeout, cerr)
			}
			return fmt.Errorf("exec in %s: %w", id, cerr)
		}
		return fmt.Errorf("exec in %s: %w", id, err)
	}

	execID := "exec-" + randomHex(8)
	proc, err := task.Exec(ctx, execID, pspec, cio.NewCreator(ioOpts...))
	if err != nil {
		close(procReady)
		return -1, ctxErr(err)
	}
	procReady <- proc
	close(procReady)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), execCleanupTimeout)
		defer cancel()
		proc.Delete(cctx, client.WithProcessKill)
	}()
	exited, err := proc.Wait(ctx)
	if err != nil {
		return -1, ctxErr(err)
	}
	if err := proc.Start(ctx); err != nil {
		return -1, ctxErr(fmt.Errorf("start: %w", err))
	}
	if req.TTY && req.Resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-req.Resize:
					if !ok {
						return
					}
					proc.Resize(ctx, uint32(sz.Width), uint32(sz.Height))
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	select {
	case st := <-exited:
		// The output is complete once the copy from the FIFOs ends.
		proc.IO().Wait()
		code, _, err := st.Result()
		if err != nil {
			// The wait ends with an error when ctx does: say it timed out.
			return -1, ctxErr(err)
		}
		return int(code), nil
	case <-ctx.Done():
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), execCleanupTimeout)
		defer cancel()
		proc.Kill(cctx, syscall.SIGKILL)
		select {
		case <-exited:
		case <-cctx.Done():
		}
		proc.IO().Cancel()
		return -1, ctxErr(nil)
	}
}

// stdinCloser calls onEOF when the reader ends.
type stdinCloser struct {
	r     io.Reader
	onEOF func()
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		go s.onEOF() // not on the copying goroutine: CloseIO waits on it
	}
	return n, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedWriter serializes writes to w, and offers nothing but Write.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
