// Package netns owns pods' network namespaces on a machine: it creates them
// bind-mounted under a directory as containerd's CRI plugin does (its
// pkg/netns, but giving threads back instead of ending them: see onThread),
// so they outlive the processes in them and containers join them by path;
// it brings their loopback up, removes them, and runs code or dials
// connections inside one (probes reach a pod's ports this way).
package netns

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// New creates a network namespace bind-mounted at a new path under baseDir
// (a random name, as the CRI plugin's), with its loopback interface up, and
// returns the path.
func New(baseDir string) (string, error) {
	if err := os.MkdirAll(baseDir, 0o755); err != nil {
		return "", fmt.Errorf("create network namespace: %w", err)
	}
	b := make([]byte, 16)
	rand.Read(b)
	path := filepath.Join(baseDir, fmt.Sprintf("cni-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]))
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create network namespace: %w", err)
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// The mount keeps the namespace alive with nothing in it.
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount: %w", err)
		}
		return loopbackUp()
	})
	if err != nil {
		Remove(path)
		return "", fmt.Errorf("create network namespace: %w", err)
	}
	return path, nil
}

// Remove unmounts and removes the namespace at path; a missing one is not
// an error. The kernel frees the namespace once nothing uses it.
func Remove(path string) error {
	if IsMounted(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("remove network namespace: %w", err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace: %w", err)
	}
	return nil
}

// IsMounted reports whether a namespace is mounted at path.
func IsMounted(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Exists reports whether a network namespace is mounted at path. A file
// left at path without a namespace on it (after a reboot) is removed, and
// reported as not existing.
func Exists(path string) (bool, error) {
	if IsMounted(path) {
		return true, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("check network namespace: %w", err)
	}
	return false, nil
}

// Do runs fn on an OS thread that has entered the network namespace at
// path, then puts the thread back into its own namespace. Sockets fn
// creates stay in the namespace after fn returns. fn must not start
// goroutines that expect to be in the namespace.
func Do(path string, fn func() error) error {
	return onThread(func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on an OS thread of its own and then returns the thread
// to the Go scheduler in the network namespace it had. If that fails, the
// thread is left locked and ends with the goroutine.
//
// Threads are returned rather than thrown away because a thread's end is
// seen outside Go: a child process started with Pdeathsig from that thread
// gets the signal.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		unix.Close(orig)
		errc <- err
	}()
	return <-errc
}

// Dial connects to address inside the network namespace at path. The
// address's host must be an IP address: a name would be resolved by
// goroutines outside the namespace.
func Dial(ctx context.Context, path, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial in network namespace: %w", err)
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("dial in network namespace: %q is not an IP address", host)
	}
	var conn net.Conn
	err = Do(path, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// Dialer returns a dial function for http.Transport.DialContext and the
// like that dials inside the network namespace at path.
func Dialer(path string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return Dial(ctx, path, network, address)
	}
}

// loopbackUp sets the lo interface up in the current thread's network
// namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: set flags: %w", err)
	}
	return nil
}

// LoopbackUp reports whether lo is up in the network namespace at path.
func LoopbackUp(path string) (bool, error) {
	var up bool
	err := Do(path, func() error {
		ifi, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		up = ifi.Flags&net.FlagUp != 0
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check loopback: %w", err)
	}
	return up, nil
}
