package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// hostLock is held while Up or Down changes the host, so that two of them
// never interleave. It is an abstract unix socket bound in the host's
// network namespace: nothing on disk, released by the kernel when its
// holder exits, however that happens.
const hostLock = "@berth.dev/lab"

// lock waits for the host lock, until ctx ends.
func lock(ctx context.Context) (release func(), err error) {
	for {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: hostLock, Net: "unix"})
		if err == nil {
			return func() { l.Close() }, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("take the host's lab lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for another lab up or down to finish: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
