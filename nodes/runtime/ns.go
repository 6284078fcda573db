package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// newPersistentNS makes a new IPC namespace, and a new UTS namespace with
// hostname unless utsPath is empty, and bind-mounts them at their paths
// (as the network namespace is), so that every container of the pod joins
// the same ones.
func newPersistentNS(ipcPath, utsPath, hostname string) error {
	targets := map[string]string{"ipc": ipcPath}
	flags := unix.CLONE_NEWIPC
	if utsPath != "" {
		targets["uts"] = utsPath
		flags |= unix.CLONE_NEWUTS
	}
	for _, p := range targets {
		if err := removeNSMount(p); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			return fmt.Errorf("namespace mount point: %w", err)
		}
		f.Close()
	}
	errc := make(chan error, 1)
	go func() {
		// Work on a thread of its own, then put it back into the
		// namespaces it had; a thread that cannot go back ends with this
		// goroutine (see netns.Do on why threads are not just thrown away).
		goruntime.LockOSThread()
		var orig []int
		defer func() {
			restored := true
			for i, fd := range orig {
				if unix.Setns(fd, [...]int{unix.CLONE_NEWIPC, unix.CLONE_NEWUTS}[i]) != nil {
					restored = false
				}
				unix.Close(fd)
			}
			if restored {
				goruntime.UnlockOSThread()
			}
		}()
		for _, kind := range []string{"ipc", "uts"} {
			fd, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errc <- fmt.Errorf("open this thread's %s namespace: %w", kind, err)
				return
			}
			orig = append(orig, fd)
		}
		errc <- func() error {
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if utsPath != "" {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("set hostname: %w", err)
				}
			}
			for kind, p := range targets {
				if err := unix.Mount("/proc/thread-self/ns/"+kind, p, "none", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind-mount %s namespace: %w", kind, err)
				}
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		for _, p := range targets {
			removeNSMount(p)
		}
		return err
	}
	return nil
}

// isNSMount reports whether a namespace is mounted at path.
func isNSMount(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// removeNSMount unmounts the namespace at path, if one is, and removes
// the file.
func removeNSMount(path string) error {
	if isNSMount(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount namespace %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace %s: %w", path, err)
	}
	return nil
}
