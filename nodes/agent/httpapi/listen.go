package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrSocketInUse: another process serves on the socket (or holds its lock).
var ErrSocketInUse = errors.New("socket in use by another process")

// ShutdownTimeout bounds how long Serve waits for requests and streams to
// finish after its context ends before it closes their connections.
const ShutdownTimeout = 10 * time.Second

// ListenUnix listens on a unix socket at path that only its owner (root,
// for the agent) may use: missing parent directories are made 0700, the
// socket is 0600 from the moment it appears (it is bound under a
// temporary name, restricted, then renamed into place).
//
// One agent per socket: a lock file beside it (path + ".lock") is held
// while the listener is open, and a socket that answers is never
// replaced (ErrSocketInUse); a stale one, left by an agent that died, is.
// A file at path that is not a socket is refused. Closing the listener
// removes the socket.
func ListenUnix(path string) (net.Listener, error) {
	path = filepath.Clean(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("listen %s: %w (%s is locked)", path, ErrSocketInUse, lock.Name())
		}
		return nil, fmt.Errorf("listen %s: lock: %w", path, err)
	}
	l, err := listenLocked(path)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return &unixListener{UnixListener: l, path: path, lock: lock}, nil
}

func listenLocked(path string) (*net.UnixListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	default:
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: a process answers on it", ErrSocketInUse)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("check whether a stale socket is live: %w", err)
		}
		// Stale: the rename below replaces it.
	}

	// Bind under a temporary name, restrict, then rename into place, so
	// that the socket is never reachable with the umask's mode. A path too
	// long for that is bound in place (its directory is still private
	// when ListenUnix made it).
	tmp := path + ".new"
	if len(tmp) > maxSocketPath {
		tmp = path
	}
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if tmp != path {
		if err := os.Rename(tmp, path); err != nil {
			return fail(err)
		}
	}
	return l, nil
}

// maxSocketPath is the longest path a unix socket may have (sun_path is
// 108 bytes, with a terminating NUL).
const maxSocketPath = 107

type unixListener struct {
	*net.UnixListener
	path string
	lock *os.File
	once sync.Once
	err  error
}

// Close stops listening, removes the socket and releases the lock.
func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) && l.err == nil {
			l.err = err
		}
		l.lock.Close()
	})
	return l.err
}

// Serve serves h on l until ctx ends, then shuts down gracefully: it stops
// accepting (closing l), lets requests in progress finish, ends the
// long-lived streams (followed events and logs, exec sessions) and waits
// for them, up to ShutdownTimeout; then it closes what is left. It returns
// nil after a shutdown, or the error that stopped it serving.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	drain, startDrain := context.WithCancel(context.Background())
	defer startDrain()
	lc := &lifecycle{drain: drain}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.WithoutCancel(ctx), lifecycleKey{}, lc)
		},
	}
	srv.RegisterOnShutdown(startDrain)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		lc.streams.close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-served // http.ErrServerClosed
	if err != nil {
		srv.Close()
		return fmt.Errorf("shut down: %w", err)
	}
	select {
	case <-lc.streams.close():
		return nil
	case <-sctx.Done():
		// Exec sessions live on hijacked connections, out of srv's reach.
		return fmt.Errorf("shut down: streams still open after %v", ShutdownTimeout)
	}
}
