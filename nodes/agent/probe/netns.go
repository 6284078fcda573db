package probe

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialContext returns a dial function whose sockets are created inside the
// network namespace at netnsPath (a bind-mounted namespace, as a pod
// sandbox has); "" dials from the host's namespace.
//
// A socket belongs to the namespace of the thread that created it, so
// each dial runs on a goroutine locked to an OS thread that enters the
// namespace, creates and connects the socket, and goes back. If going back
// fails, the goroutine exits still locked, and Go retires the thread rather
// than reuse it in the wrong namespace.
func DialContext(netnsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if netnsPath == "" {
		var d net.Dialer
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			conn net.Conn
			err  error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			conn, restored, err := dialIn(ctx, netnsPath, network, addr)
			if restored {
				runtime.UnlockOSThread()
			}
			ch <- result{conn, err}
		}()
		r := <-ch
		return r.conn, r.err
	}
}

// dialIn must run on a locked thread. restored reports whether the thread
// is back in its original namespace.
func dialIn(ctx context.Context, netnsPath, network, addr string) (conn net.Conn, restored bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("open current network namespace: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter network namespace %s: %w", netnsPath, err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, addr)
	if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
		return conn, false, err
	}
	return conn, true, err
}
